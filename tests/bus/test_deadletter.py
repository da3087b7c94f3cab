"""Dead letters: poison entries, undecodable entries, entries trimmed before their ack."""

from __future__ import annotations

from bus import RedisBus
from events import Event, TaskHint
from tests.bus.helpers import hint, numbers
from tests.conftest import RedisBackend, wait_until


def test_poison_event_is_dead_lettered_after_the_delivery_limit(
    redis_backend: RedisBackend,
) -> None:
    bus = redis_backend.bus(max_deliveries=3, reclaim_idle_ms=0, reclaim_interval_ms=0)
    poison = hint(1)
    bus.publish_many([hint(0), poison, hint(2)])
    calls: list[int] = []
    handled: list[Event] = []

    def handler(event: Event) -> None:
        assert isinstance(event, TaskHint)
        calls.append(int(event.text))
        if event.text == "1":
            raise RuntimeError("poison")
        handled.append(event)

    sub = bus.subscribe("g", "c", handler)
    wait_until(lambda: sub.poll(block_ms=0) is not None and bus.dead_letters())
    assert calls.count(1) == 3  # delivered max_deliveries times, then given up on
    assert numbers(handled) == [0, 2]
    [dead] = bus.dead_letters()
    assert dead.group == "g" and dead.consumer == "c"
    assert dead.deliveries == 4
    assert "delivered 4 times (limit 3)" in dead.reason
    assert "RuntimeError: poison" in dead.reason
    assert dead.event() == poison
    assert dead.stream == bus.stream
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0
    assert sub.stats.dead == 1
    assert sub.poll(block_ms=0) == 0  # the consumer carries on


def test_undecodable_entries_are_dead_lettered_at_once_and_once(bus: RedisBus) -> None:
    bus.publish(hint(0))
    bad = [
        {"type": "task.hint", "id": "x1", "data": "{not json"},
        {"type": "no.such.type", "id": "x2", "data": '{"type": "no.such.type"}'},
        {"something": "else"},
        {"type": "task.hint", "id": "x3", "data": b"\xff\xfe"},
    ]
    bad_ids = [bus.client.xadd(bus.stream, fields) for fields in bad]
    bus.publish(hint(1))
    got: list[Event] = []
    sub = bus.subscribe("g", "c", got.append)
    assert sub.drain() == 2
    assert numbers(got) == [0, 1]
    dead = bus.dead_letters()
    assert [d.entry_id for d in dead] == [i.decode() for i in bad_ids]
    assert all(d.reason.startswith("undecodable") for d in dead)
    assert dead[0].fields["data"] == b"{not json"
    assert dead[0].event() is None
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0
    # another group acks them too, without recording them again
    other: list[Event] = []
    assert bus.subscribe("h", "c", other.append).drain() == 2
    assert len(bus.dead_letters()) == 4
    assert bus.client.xpending(bus.stream, "h")["pending"] == 0
    # replay skips them
    assert numbers([e for _, e in bus.replay()]) == [0, 1]


def test_entries_trimmed_before_their_ack_are_counted_and_recorded(
    redis_backend: RedisBackend,
) -> None:
    bus = redis_backend.bus(reclaim_idle_ms=0, reclaim_interval_ms=0)
    bus.publish_many([hint(i) for i in range(5)])
    bus.ensure_group("g")
    bus.client.xreadgroup("g", "crashed", {bus.stream: ">"}, count=10)  # pending, never acked
    bus.client.xtrim(bus.stream, maxlen=0, approximate=False)
    got: list[Event] = []
    sub = bus.subscribe("g", "rescuer", got.append)
    sub.drain()
    assert got == []
    assert sub.stats.trimmed == 5
    dead = bus.dead_letters()
    assert len(dead) == 5
    assert all("trimmed" in d.reason for d in dead)
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0


def test_trimming_policies(redis_backend: RedisBackend) -> None:
    from bus import TrimPolicy

    by_len = redis_backend.bus(trim=TrimPolicy.MAXLEN, maxlen=10)
    for i in range(1000):
        by_len.publish(hint(i))
    assert by_len.client.xlen(by_len.stream) < 500
    by_len.delete_all()

    by_age = redis_backend.bus(trim=TrimPolicy.MINID, retention_s=0.0)
    for i in range(1000):
        by_age.publish(hint(i))
    assert by_age.client.xlen(by_age.stream) < 500
    by_age.delete_all()

    untrimmed = redis_backend.bus(trim=TrimPolicy.NONE)
    untrimmed.publish_many([hint(i) for i in range(1000)])
    assert untrimmed.client.xlen(untrimmed.stream) == 1000
