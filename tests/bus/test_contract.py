"""The bus contract, run against in-process fakeredis and the real Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from bus import RedisBus, stream_id
from events import Event, TaskHint, utcnow
from tests.bus.helpers import hint, numbers, started
from tests.conftest import RedisBackend, wait_until


def test_publish_returns_increasing_ids_and_order_is_kept(bus: RedisBus) -> None:
    ids = [bus.publish(hint(i)) for i in range(5)]
    ids += bus.publish_many([hint(i) for i in range(5, 50)])
    assert len(set(ids)) == 50
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    got: list[Event] = []
    sub = bus.subscribe("g", "c1", got.append)
    assert sub.drain() == 50
    assert numbers(got) == list(range(50))


def test_publish_many_empty(bus: RedisBus) -> None:
    assert bus.publish_many([]) == []


def test_events_round_trip_exactly(bus: RedisBus) -> None:
    events = [hint(1), started(2, loop=None)]
    bus.publish_many(events)
    got: list[Event] = []
    bus.subscribe("g", "c", got.append).drain()
    assert got == events


def test_group_created_after_publish_sees_earlier_events(bus: RedisBus) -> None:
    bus.publish(hint(1))
    got: list[Event] = []
    bus.subscribe("late", "c", got.append).drain()
    assert numbers(got) == [1]


def test_each_group_gets_every_event(bus: RedisBus) -> None:
    bus.publish_many([hint(i) for i in range(10)])
    a: list[Event] = []
    b: list[Event] = []
    bus.subscribe("a", "c", a.append).drain()
    bus.subscribe("b", "c", b.append).drain()
    assert numbers(a) == numbers(b) == list(range(10))


def test_acked_events_are_not_delivered_again(bus: RedisBus) -> None:
    bus.publish_many([hint(i) for i in range(3)])
    got: list[Event] = []
    sub = bus.subscribe("g", "c", got.append)
    assert sub.drain() == 3
    assert sub.drain() == 0
    pending = bus.client.xpending(bus.stream, "g")
    assert pending["pending"] == 0
    # a new consumer of the same group starts after the acked entries too
    assert bus.subscribe("g", "other", got.append).drain() == 0


def test_handler_exception_leaves_event_pending_and_it_is_redelivered(
    redis_backend: RedisBackend,
) -> None:
    bus = redis_backend.bus(reclaim_idle_ms=50, reclaim_interval_ms=0)
    bus.publish_many([hint(1), hint(2)])
    calls: list[int] = []
    handled: list[int] = []

    def flaky(event: Event) -> None:
        assert isinstance(event, TaskHint)
        calls.append(int(event.text))
        if event.text == "1" and calls.count(1) == 1:
            raise RuntimeError("first attempt fails")
        handled.append(int(event.text))

    sub = bus.subscribe("g", "c", flaky)
    assert sub.poll(block_ms=0) == 1  # 2 handled; 1 failed and stays pending
    assert handled == [2]
    assert sub.stats.failed == 1
    assert bus.client.xpending(bus.stream, "g")["pending"] == 1
    wait_until(lambda: sub.poll(block_ms=10) or handled == [2, 1])
    assert handled == [2, 1]
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0
    assert sub.stats.reclaimed == 1


def test_pending_entries_of_a_dead_consumer_are_reclaimed(redis_backend: RedisBackend) -> None:
    bus = redis_backend.bus(reclaim_idle_ms=50, reclaim_interval_ms=0)
    bus.publish_many([hint(i) for i in range(5)])
    # "crashed" consumer: reads the entries, never acks (the entries stay pending)
    bus.ensure_group("g")
    bus.client.xreadgroup("g", "crashed", {bus.stream: ">"}, count=10)
    got: list[Event] = []
    sub = bus.subscribe("g", "rescuer", got.append)
    wait_until(lambda: sub.poll(block_ms=10) or len(got) == 5)
    assert numbers(got) == list(range(5))
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0


def test_filters_ack_without_calling_the_handler(bus: RedisBus) -> None:
    bus.publish_many([hint(1, loop="a"), started(2, loop="a"), hint(3, loop="b")])
    by_type: list[Event] = []
    by_loop: list[Event] = []
    s1 = bus.subscribe("t", "c", by_type.append, types={"task.started"})
    s2 = bus.subscribe("l", "c", by_loop.append, loop="b")
    assert s1.drain() == 1
    assert s2.drain() == 1
    assert [e.type for e in by_type] == ["task.started"]
    assert numbers(by_loop) == [3]
    assert s1.stats.skipped == 2
    for group in ("t", "l"):
        assert bus.client.xpending(bus.stream, group)["pending"] == 0


def test_unknown_type_filter_is_rejected(bus: RedisBus) -> None:
    with pytest.raises(ValueError, match="unknown event types"):
        bus.subscribe("g", "c", lambda e: None, types={"no.such"})


def test_poll_blocks_until_an_event_arrives(bus: RedisBus) -> None:
    got: list[Event] = []
    sub = bus.subscribe("g", "c", got.append)
    assert sub.poll(block_ms=50) == 0
    stop = threading.Event()
    worker = threading.Thread(target=sub.run, args=(stop, 200))
    worker.start()
    try:
        bus.publish(hint(7))
        wait_until(lambda: got)
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()
    assert numbers(got) == [7]


def test_replay_by_id_and_by_time(bus: RedisBus) -> None:
    ids = bus.publish_many([hint(i, loop="a" if i % 2 else "b") for i in range(1200)])
    everything = list(bus.replay())
    assert [eid for eid, _ in everything] == ids
    assert numbers([e for _, e in bus.replay(ids[600])]) == list(range(600, 1200))
    assert numbers([e for _, e in bus.replay(ids[10], until=ids[12])]) == [10, 11, 12]
    assert numbers([e for _, e in bus.replay(count=3)]) == [0, 1, 2]
    assert numbers([e for _, e in bus.replay(loop="a", count=3)]) == [1, 3, 5]
    assert list(bus.replay(types={"task.started"})) == []
    # by time: the stream id's millisecond is the append time
    first_ms = int(ids[0].split("-")[0])
    last_ms = int(ids[-1].split("-")[0])
    start = datetime.fromtimestamp(first_ms / 1000, UTC)
    assert len(list(bus.replay(start))) == 1200
    after = datetime.fromtimestamp((last_ms + 1) / 1000, UTC)
    assert list(bus.replay(after)) == []
    assert len(list(bus.replay(until=datetime.fromtimestamp(last_ms / 1000, UTC)))) == 1200
    assert list(bus.replay(utcnow() + timedelta(hours=1))) == []


def test_stream_id_of_a_datetime() -> None:
    at = datetime(2026, 11, 21, tzinfo=UTC)
    ms = int(at.timestamp() * 1000)
    assert stream_id(at) == f"{ms}-0"
    assert stream_id(at, end=True).startswith(f"{ms}-")
    assert stream_id("5-1") == "5-1"


def test_tail_follows_new_events(bus: RedisBus) -> None:
    bus.publish(hint(0))
    assert bus.tail("$", block_ms=20) == []
    first = bus.publish(hint(1))
    got = bus.tail("0", block_ms=20)
    assert numbers([e for _, e in got]) == [0, 1]
    assert got[-1][0] == first
    assert bus.tail(first, block_ms=20) == []
    bus.publish_many([hint(2), hint(3)])
    assert numbers([e for _, e in bus.tail(first, block_ms=20)]) == [2, 3]


def test_tail_reads_past_undecodable_entries(bus: RedisBus) -> None:
    last = bus.publish(hint(0))
    bus.client.xadd(bus.stream, {"type": "task.hint", "id": "x", "data": "{not json"})
    bus.publish(hint(1))
    assert numbers([e for _, e in bus.tail(last, block_ms=50)]) == [1]


def test_idempotency_skips_handled_events(bus: RedisBus) -> None:
    event = hint(1)
    bus.publish(event)
    bus.publish(event)  # the same event landing twice (an XADD retried after a timeout)
    calls: list[Event] = []
    idem = bus.idempotency("g")
    sub = bus.subscribe("g", "c", idem.wrap(calls.append))
    sub.drain()
    assert calls == [event]
    assert idem.seen(event.id)
    assert idem.first_time("other")
    assert not idem.first_time("other")
    idem.forget("other")
    assert not idem.seen("other")


def test_idempotency_marks_only_after_success(bus: RedisBus) -> None:
    idem = bus.idempotency("g")

    def boom(event: Event) -> None:
        raise RuntimeError("no")

    event = hint(1)
    with pytest.raises(RuntimeError):
        idem.wrap(boom)(event)
    assert not idem.seen(event.id)


def test_wire_format_is_events_encode(bus: RedisBus) -> None:
    """Other tools (and `redis-cli`) read entries as `events.encode` writes them."""
    from events import encode

    event = TaskHint(source=hint(0).source, loop="ä-loop", task_id="T-1", text="naïve ✓ \r\n")
    bus.publish(event)
    bus.publish_many([event])
    for _, fields in bus.client.xrange(bus.stream):
        assert {k.decode(): v.decode() for k, v in fields.items()} == encode(event)


def test_tail_without_blocking_reads_past_a_run_of_undecodable_entries(bus: RedisBus) -> None:
    start = bus.publish(hint(0))
    for _ in range(5):
        bus.client.xadd(bus.stream, {"type": "task.hint", "id": "x", "data": "{not json"})
    assert bus.tail(start, block_ms=0, count=2) == []
    bus.publish(hint(1))
    assert numbers([e for _, e in bus.tail(start, block_ms=0, count=2)]) == [1]


def test_a_subscription_survives_its_stream_being_deleted(bus: RedisBus) -> None:
    got: list[Event] = []
    sub = bus.subscribe("g", "c", got.append)
    bus.publish(hint(0))
    assert sub.drain() == 1
    bus.delete_all()  # e.g. an operator resets the project
    sub.drain()  # recreates the group instead of failing
    bus.publish(hint(1))
    sub.drain()
    assert numbers(got) == [0, 1]


def test_run_stops_promptly_on_a_server_that_does_not_block() -> None:
    # fakeredis answers a BLOCK at once, so run() backs off in a loop of its own; that
    # loop must see the stop. (A real server's BLOCK ends by itself: nothing to test.)
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)), protocol=2)
    sub = RedisBus(client, prefix="stop-test").subscribe("g", "c", lambda e: None)
    stop = threading.Event()
    worker = threading.Thread(target=sub.run, args=(stop, 60_000))
    worker.start()
    stop.set()
    worker.join(5)  # without the stop check, the back-off loop would run for 60 s
    assert not worker.is_alive()
    client.close()
