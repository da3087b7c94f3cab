"""What a published event costs must not grow with the number of loops (issue 12).

On a `redis-server` of the test's own (nothing else's traffic in its counters), one
process's worth of consumers: the loops' `bus.Router` with N loops and three roles'
subscriptions (as `loops up` runs the gate, the merge queue, the monitor...). The
figures pinned, for N = 10 and N = 40 alike:
- the connections the bus opens (`CLIENT LIST`): one per thread that talks to Redis,
  never one per loop;
- Redis calls per published event (`INFO commandstats`): the XADD, and a read and an
  ack per interested group, never a read and an ack per loop.
With one consumer group per loop (the old design) N = 10 already costs over 20 calls
an event and N + 4 connections."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bus import BusSettings, RedisBus, Router
from events import Event
from tests.bus.helpers import hint, started
from tests.bus.ownserver import OwnRedis
from tests.conftest import wait_until

ROLES = {"gate": {"task.started"}, "merge": {"task.started"}, "monitor": {"task.hint"}}
EVENTS = 60
MAX_CONNECTIONS = len(ROLES) + 3  # the router, the roles, a publisher, one spare
MAX_CALLS_PER_EVENT = 2 * (len(ROLES) + 1) + 3  # XADD + read/ack per group + slack


def _calls(admin: object) -> int:
    stats = admin.info("commandstats")  # type: ignore[attr-defined]
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if not k.startswith(("cmdstat_info", "cmdstat_client", "cmdstat_xpending"))
    )


def _seen(sub: object, router: Router) -> int:
    """Entries the subscription has read so far (handled, skipped or routed)."""
    if sub is router.subscription:
        return router.routed + router.subscription.stats.skipped
    stats = sub.stats  # type: ignore[attr-defined]
    return int(stats.handled + stats.skipped)


@pytest.mark.parametrize("loops", [10, 40])
def test_connections_and_calls_per_event_do_not_grow_with_loops(loops: int, tmp_path: Path) -> None:
    server = OwnRedis(tmp_path).start()
    settings = BusSettings(url=server.url, prefix="scale", reclaim_interval_ms=60_000)
    bus = RedisBus.from_settings(settings)
    admin = server.admin()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    names = [f"loop-{i:03d}" for i in range(loops)]
    handled: dict[str, list[Event]] = {name: [] for name in names}
    try:
        router = Router(bus, names, consumer="up", types={"task.hint"})
        subs = [router.subscription] + [
            bus.subscribe(group, "up", lambda e: None, types=types)
            for group, types in ROLES.items()
        ]
        for sub in subs:
            threads.append(threading.Thread(target=sub.run, args=(stop,), kwargs={"block_ms": 500}))
        for name in names:

            def work(name: str = name) -> None:  # a loop: handles its inbox, no Redis
                while not stop.is_set():
                    router.inbox(name).poll(handled[name].append, 200)

            threads.append(threading.Thread(target=work))
        for thread in threads:
            thread.start()
        wait_until(lambda: len(admin.client_list()) - 1 >= len(subs))  # all reading
        before = _calls(admin)
        for n in range(EVENTS):
            loop = names[n % loops]
            bus.publish(hint(n, loop=loop) if n % 2 else started(n, loop=loop))
            # One at a time: every group reads each event on its own (no batching
            # to flatter the figure), as when events trickle in from busy loops.
            wait_until(lambda n=n: all(_seen(s, router) > n for s in subs))

        def settled() -> bool:
            if sum(map(len, handled.values())) < EVENTS // 2 or router.pending():
                return False
            return (
                all(
                    int(admin.xpending(bus.stream, s.group)["pending"]) == 0  # type: ignore[index]
                    and s.stats.handled + s.stats.skipped >= EVENTS
                    for s in subs[1:]
                )
                and int(admin.xpending(bus.stream, router.group)["pending"]) == 0
            )  # type: ignore[index]

        wait_until(settled, timeout=30)
        calls_per_event = (_calls(admin) - before) / EVENTS
        connections = len(admin.client_list()) - 1  # without the admin's own
        print(f"N={loops}: {connections} connections, {calls_per_event:.1f} calls/event")
        assert connections <= MAX_CONNECTIONS, connections
        assert calls_per_event <= MAX_CALLS_PER_EVENT, calls_per_event
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        bus.close()
        admin.close()
        server.stop()
