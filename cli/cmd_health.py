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
import sys
from datetime import UTC, datetime

import redis

from app.runtime import Presence, live_processes
from bus import connect
from cli.context import bus_settings, redact

EXIT_OK, EXIT_FAIL = 0, 1


def _describe(p: Presence, now: datetime) -> str:
    return f"{p.role:<24} {p.instance:<32} pid {p.pid:<7} last beat {p.age_s(now):.1f}s ago"


def run(args: argparse.Namespace) -> int:
    settings = bus_settings(args)
    role: str | None = args.role
    here: bool = args.here
    now = datetime.now(UTC)
    client = connect(settings)
    try:
        presences, workers = live_processes(client, settings.prefix, role, here=here, now=now)
    except redis.RedisError as exc:
        print(f"loops health: cannot reach Redis at {redact(settings.url)}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()

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
