"""Invariant 1 on a real bus: hostile entries XADDed beside real events never stop a
consumer, a replay or a tail. Each entry is either handled (it decodes) or
dead-lettered with its reason (it does not); nothing is left pending."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import RedisBus
from events import DecodeError, Event, decode
from tests.bus.helpers import hint, numbers
from tests.conftest import RedisBackend
from tests.poison import entries


def _decodes(fields: dict[bytes, bytes]) -> bool:
    try:
        decode(fields)
    except DecodeError:
        return False
    return True


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(entries, min_size=1, max_size=6))
def test_consumers_readers_and_followers_survive_any_entry(
    redis_backend: RedisBackend, batch: list[dict[bytes, bytes]]
) -> None:
    # One prefix per example (the fixture's is per test); deleted afterwards.
    bus = RedisBus(redis_backend.client, prefix=f"{redis_backend.prefix}-{uuid.uuid4().hex[:6]}")
    try:
        first, last = hint(0), hint(1)
        bus.publish(first)
        for fields in batch:
            bus.client.xadd(bus.stream, fields)  # type: ignore[arg-type]
        bus.publish(last)
        got: list[Event] = []
        sub = bus.subscribe("all", "c", got.append)
        filtered: list[Event] = []
        only_hints = bus.subscribe("hints", "c", filtered.append, types={"task.hint"})
        sub.drain()
        only_hints.drain()
        good = sum(_decodes(f) for f in batch)
        assert len(got) == good + 2
        assert got[0] == filtered[0] == first and got[-1] == filtered[-1] == last
        assert sub.stats.dead == len(batch) - good
        assert len(bus.dead_letters()) == len(batch) - good  # once, not once per group
        assert all(d.reason.startswith("undecodable") for d in bus.dead_letters())
        for group in ("all", "hints"):
            assert bus.client.xpending(bus.stream, group)["pending"] == 0
        assert len(list(bus.replay())) == good + 2
        assert len(list(bus.replay(types={"task.hint"}))) >= 2
        assert len(bus.tail("0-0", block_ms=0, count=1000)) >= 1
    finally:
        bus.delete_all()


def test_an_entry_whose_type_is_one_non_utf8_byte_stops_nobody(redis_backend: RedisBackend) -> None:
    """Issue 9, row 6: this entry crashed every role, on every restart."""
    bus = redis_backend.bus()
    bus.client.xadd(bus.stream, {b"type": b"\xff", b"id": b"x", b"data": b"{}"})
    bus.publish(hint(1))
    for types in (None, {"task.hint"}):
        got: list[Event] = []
        assert bus.subscribe(f"g{types is None}", "c", got.append, types=types).drain() == 1
        assert numbers(got) == [1]
    assert numbers([e for _, e in bus.replay(types={"task.hint"})]) == [1]
    assert numbers([e for _, e in bus.tail("0-0", block_ms=0)]) == [1]
    [dead] = bus.dead_letters()
    assert dead.fields["type"] == b"\xff" and "undecodable" in dead.reason
