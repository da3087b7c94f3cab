"""The spend ledger (`bus.spend`) on fakeredis and real Redis: counted at the start,
figures at the end, once per call id; open calls' time counts; invalid figures never
lower a spend; the rolling day; raises and once-only marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bus.spend import DAY, PROJECT, SpendLedger, clean, loop_scope, task_scope
from tests.conftest import RedisBackend

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
SCOPES = [task_scope("l1", "T-1"), loop_scope("l1"), PROJECT, DAY]


def ledger(backend: RedisBackend) -> SpendLedger:
    return SpendLedger(backend.client, backend.prefix)


def test_a_call_counts_when_it_starts_and_its_figures_when_it_ends(
    redis_backend: RedisBackend,
) -> None:
    spend = ledger(redis_backend)
    assert spend.begin("c1", SCOPES, T0)
    assert not spend.begin("c1", SCOPES, T0)  # a retry counts nothing twice
    during = spend.spent(loop_scope("l1"), T0 + timedelta(seconds=30))
    assert (during.calls, during.tokens, during.usd, during.wall_s) == (1, 0, 0.0, 30.0)
    assert spend.end("c1", T0 + timedelta(seconds=40), tokens=1200, usd=0.25, wall_s=12)
    assert not spend.end("c1", T0 + timedelta(seconds=50), tokens=1200, usd=0.25)
    for scope in SCOPES:
        after = spend.spent(scope, T0 + timedelta(hours=1))
        # The measured 40s wins over the 12s the agent reported.
        assert (after.calls, after.tokens, after.usd, after.wall_s) == (1, 1200, 0.25, 40.0)
    assert spend.spent(task_scope("l1", "T-2"), T0).calls == 0


def test_invalid_figures_count_as_zero_and_never_lower_a_spend(
    redis_backend: RedisBackend,
) -> None:
    spend = ledger(redis_backend)
    for i, bad in enumerate([float("nan"), float("-inf"), -5.0, float("inf"), None]):
        spend.begin(f"c{i}", [PROJECT], T0)
        spend.end(f"c{i}", T0, tokens=bad, usd=bad, wall_s=bad)
    total = spend.spent(PROJECT, T0)
    assert (total.calls, total.tokens, total.usd, total.wall_s) == (5, 0, 0.0, 0.0)
    assert clean(1e300) == 1e12 and clean("x") == 0.0  # type: ignore[arg-type]


def test_a_crash_leaves_the_call_counted_and_reap_charges_its_time(
    redis_backend: RedisBackend,
) -> None:
    spend = ledger(redis_backend)
    spend.begin("l1:c", SCOPES, T0)
    spend.begin("l2:c", [loop_scope("l2"), PROJECT], T0)
    # A new ledger object (a restarted process) sees the same open call.
    again = ledger(redis_backend)
    assert set(again.open_calls()) == {"l1:c", "l2:c"}
    assert again.reap(loop_scope("l1"), T0 + timedelta(minutes=5)) == 1
    assert set(again.open_calls()) == {"l2:c"}
    done = again.spent(loop_scope("l1"), T0 + timedelta(hours=2))
    assert (done.calls, done.wall_s) == (1, 300.0)


def test_the_day_is_the_last_24_hours(redis_backend: RedisBackend) -> None:
    spend = ledger(redis_backend)
    spend.record([DAY, PROJECT], T0, line="agent", call_id="old", usd=1.0)
    spend.record([DAY, PROJECT], T0 + timedelta(hours=20), line="verify", call_id="new", usd=2.0)
    spend.record([DAY, PROJECT], T0 + timedelta(hours=20), line="verify", call_id="new", usd=2.0)
    assert spend.spent(DAY, T0 + timedelta(hours=21)).usd == 3.0
    assert spend.spent(DAY, T0 + timedelta(hours=25)).usd == 2.0  # the first hour left it
    assert spend.spent(PROJECT, T0 + timedelta(hours=25)).usd == 3.0
    assert spend.lines(PROJECT)["verify.usd"] == 2.0  # its own line


def test_raises_add_up_and_marks_are_once(redis_backend: RedisBackend) -> None:
    spend = ledger(redis_backend)
    assert spend.raise_limit(loop_scope("l1"), "usd", 5) == 5
    assert spend.raise_limit(loop_scope("l1"), "usd", 2.5) == 7.5
    spend.raise_limit(PROJECT, "calls", 3)
    assert spend.raises(loop_scope("l1")) == {"usd": 7.5}
    assert spend.raises(PROJECT) == {"calls": 3}
    assert spend.mark_once("warn|x") and not spend.mark_once("warn|x")
    spend.unmark("warn|x")
    assert spend.mark_once("warn|x")
