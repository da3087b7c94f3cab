"""`bus.Router`: one subscription for the loops of a process, routing each event to
the loops it concerns, with at-least-once delivery kept (both backends)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bus import RedisBus, Router, router_group
from events import Event, Role, Source, TaskPassed
from tests.bus.helpers import hint, numbers
from tests.conftest import RedisBackend, wait_until

TYPES = {"task.hint", "task.passed"}
BROADCAST = {"task.passed"}


def passed(loop: str, task: str) -> TaskPassed:
    source = Source(role=Role.MERGE, instance="test")
    return TaskPassed(
        source=source, loop=loop, task_id=task, commit="c" * 40, merged_commit="d" * 40, attempt=1
    )


@pytest.fixture
def running() -> Iterator[list[tuple[threading.Event, threading.Thread]]]:
    """Routers' threads started by a test, stopped and joined after it."""
    threads: list[tuple[threading.Event, threading.Thread]] = []
    yield threads
    for stop, _ in threads:
        stop.set()
    for _, thread in threads:
        thread.join(timeout=10)


def start(router: Router, running: list[tuple[threading.Event, threading.Thread]]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), kwargs={"block_ms": 50})
    thread.start()
    running.append((stop, thread))


def pending(bus: RedisBus, group: str) -> int:
    return int(bus.client.xpending(bus.stream, group)["pending"])  # type: ignore[index]


def test_group_names_follow_the_set_of_loops() -> None:
    assert router_group(["alpha"]) == "worker:alpha"  # what `loops worker alpha` uses
    assert router_group(["b", "a"]) == router_group(["a", "b"])
    assert router_group(["a", "b"]) != router_group(["a", "c"])
    assert router_group(["a", "b"]).startswith("workers:")


def test_events_go_to_the_loop_they_name_and_broadcasts_to_all(
    redis_backend: RedisBackend, running: list[tuple[threading.Event, threading.Thread]]
) -> None:
    bus = redis_backend.bus()
    router = Router(bus, ["alpha", "beta"], consumer="p1", types=TYPES, broadcast=BROADCAST)
    start(router, running)
    got: dict[str, list[Event]] = {"alpha": [], "beta": []}
    bus.publish(hint(1, loop="alpha"))
    bus.publish(hint(2, loop="beta"))
    bus.publish(hint(3, loop="gamma"))  # no loop of this process: acked, handed to none
    bus.publish(passed("alpha", "T-1"))

    def poll_all() -> bool:
        for name, out in got.items():
            router.inbox(name).poll(out.append, 0)
        return len(got["alpha"]) == 2 and len(got["beta"]) == 2

    wait_until(poll_all)
    assert numbers(got["alpha"]) == [1] and numbers(got["beta"]) == [2]
    assert all(isinstance(e[-1], TaskPassed) for e in got.values())
    wait_until(lambda: router.pending() == 0 and pending(bus, router.group) == 0)


def test_an_entry_is_acked_only_once_its_loop_handled_it(
    redis_backend: RedisBackend, running: list[tuple[threading.Event, threading.Thread]]
) -> None:
    # Fast reclaim, one delivery allowed: a loop busy with its agent must not see the
    # entries waiting in its inbox reclaimed from under it, nor dead-lettered.
    bus = redis_backend.bus(reclaim_idle_ms=50, reclaim_interval_ms=20, max_deliveries=1)
    router = Router(bus, ["alpha", "beta"], consumer="p1", types=TYPES)
    start(router, running)
    bus.publish(hint(1, loop="alpha"))
    wait_until(lambda: len(router.inbox("alpha")) == 1)
    # several reclaim rounds pass while the loop is busy
    wait_until(lambda: router.touches >= 5)
    assert pending(bus, router.group) == 1  # not acked: the loop has not handled it
    got: list[Event] = []
    assert router.inbox("alpha").poll(got.append, 0) == 1
    wait_until(lambda: pending(bus, router.group) == 0)
    assert numbers(got) == [1]
    assert bus.dead_letters() == []


def test_a_failed_handler_leaves_the_entry_pending_and_it_comes_back(
    redis_backend: RedisBackend, running: list[tuple[threading.Event, threading.Thread]]
) -> None:
    bus = redis_backend.bus(reclaim_idle_ms=50, reclaim_interval_ms=20)
    router = Router(bus, ["alpha", "beta"], consumer="p1", types=TYPES, broadcast=BROADCAST)
    start(router, running)
    bus.publish(passed("gamma", "T-9"))  # to both loops
    calls: list[str] = []

    def flaky(event: Event) -> None:
        calls.append("beta")
        if len(calls) == 1:
            raise RuntimeError("disk full")

    ok: list[Event] = []
    wait_until(lambda: len(router.inbox("beta")) == 1)
    router.inbox("alpha").poll(ok.append, 0)
    router.inbox("beta").poll(flaky, 0)  # raises: entry stays pending
    assert router.subscription.stats.failed == 1
    # reclaimed and routed again to both loops (alpha dedupes on event.id in real life)
    wait_until(lambda: len(router.inbox("beta")) == 1, timeout=15)
    router.inbox("beta").poll(flaky, 0)
    router.inbox("alpha").poll(ok.append, 0)
    wait_until(lambda: pending(bus, router.group) == 0)
    assert calls == ["beta", "beta"] and len(ok) == 2


def test_processes_running_different_loops_each_get_their_events(
    redis_backend: RedisBackend, running: list[tuple[threading.Event, threading.Thread]]
) -> None:
    """Distributed mode: `loops up --only a,b` here, `loops worker c` there."""
    here = Router(redis_backend.bus(), ["a", "b"], consumer="here", types=TYPES)
    there = Router(redis_backend.bus(), ["c"], consumer="there", types=TYPES)
    start(here, running)
    start(there, running)
    bus = redis_backend.bus()
    for n, loop in enumerate(["a", "b", "c", "c", "a"]):
        bus.publish(hint(n, loop=loop))
    got: dict[str, list[Event]] = {"a": [], "b": [], "c": []}

    def poll_all() -> bool:
        for name, out in got.items():
            (here if name != "c" else there).inbox(name).poll(out.append, 0)
        return sum(map(len, got.values())) == 5

    wait_until(poll_all)
    assert {k: numbers(v) for k, v in got.items()} == {"a": [0, 4], "b": [1], "c": [2, 3]}
