"""`loops health [ROLE]`: is a role process alive? (what compose health checks call)

A role is alive while its presence key (written by `app.runtime.run_role`) is fresh.
ROLE `worker` matches every loop worker, `worker:LOOP` one loop's. ROLE `rq` (or
`rq:QUEUE`) asks about rq workers instead, which register themselves in Redis.
With `--here`, only processes on this host count: inside a container that is the
container itself, so a compose health check tests its own service.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import redis

from app.runtime import Presence, alive_roles
from bus import connect
from cli.context import bus_settings, redact

EXIT_OK, EXIT_FAIL = 0, 1


def _rq_workers(client: redis.Redis, role: str, here: bool) -> list[dict[str, Any]]:
    from rq import Worker

    queue = role.partition(":")[2]
    found = []
    for worker in Worker.all(connection=client):
        if queue and queue not in worker.queue_names():
            continue
        if here and worker.hostname != socket.gethostname():
            continue
        found.append(
            {
                "role": f"rq:{','.join(worker.queue_names())}",
                "instance": worker.name,
                "pid": worker.pid,
                "host": worker.hostname,
                "last_beat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
            }
        )
    return found


def _describe(p: Presence, now: datetime) -> str:
    return f"{p.role:<24} {p.instance:<32} pid {p.pid:<7} last beat {p.age_s(now):.1f}s ago"


def run(args: argparse.Namespace) -> int:
    settings = bus_settings(args)
    role: str | None = args.role
    here: bool = args.here
    now = datetime.now(UTC)
    client = connect(settings)
    try:
        if role is not None and (role == "rq" or role.startswith("rq:")):
            workers = _rq_workers(client, role, here)
            presences: list[Presence] = []
        else:
            workers = []
            presences = alive_roles(client, settings.prefix, now=now)
    except redis.RedisError as exc:
        print(f"loops health: cannot reach Redis at {redact(settings.url)}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()

    if here:
        host = socket.gethostname()
        presences = [p for p in presences if p.host == host]
    if role is not None:
        presences = [p for p in presences if p.matches(role)]

    if args.json:
        items = [p.model_dump(mode="json") for p in presences] + workers
        print(json.dumps(items))
    elif role is None:
        for p in presences:
            print(_describe(p, now))
    if presences or workers:
        if role is not None and not args.json:
            count = len(presences) + len(workers)
            print(f"{role}: alive ({count} process{'es' if count > 1 else ''})")
        return EXIT_OK
    where = " on this host" if here else ""
    what = f"no live {role}" if role else "no live role"
    print(
        f"loops health: {what}{where} (prefix {settings.prefix!r} at {redact(settings.url)})",
        file=sys.stderr,
    )
    return EXIT_FAIL
