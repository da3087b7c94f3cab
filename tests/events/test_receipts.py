"""Receipts add up exactly to the per-call figures of the events they fold, and the
one check of an agent-reported cost refuses what it must not trust."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events as ev

SRC = ev.Source(role=ev.Role.WORKER, instance="test:1")
GATE = ev.Source(role=ev.Role.GATE, instance="test:gate")

costs = st.one_of(st.none(), st.floats(min_value=0, max_value=50, allow_nan=False))
tokens = st.builds(
    ev.TokenUsage,
    input_tokens=st.integers(0, 10**7),
    output_tokens=st.integers(0, 10**6),
    cache_read_tokens=st.integers(0, 10**7),
    cache_write_tokens=st.integers(0, 10**6),
)
calls = st.lists(
    st.tuples(
        costs,
        st.one_of(st.none(), tokens),
        st.floats(min_value=0, max_value=3600, allow_nan=False),
        st.sampled_from(list(ev.IterationOutcome)),
        st.booleans(),  # the claim is rejected by the gate
    ),
    min_size=1,
    max_size=12,
)


def _finished(task: str, n: int, call: tuple, commit: str | None) -> ev.IterationFinished:
    cost, used, duration, outcome, _ = call
    return ev.IterationFinished(
        source=SRC,
        loop="a",
        task_id=task,
        iteration=n,
        attempt=1,
        outcome=outcome,
        duration_s=duration,
        tokens=used,
        cost_usd=cost,
        cost_source=ev.CostSource.AGENT if cost is not None else ev.CostSource.NONE,
        commit=commit,
    )


def _story(task: str, plan: list[tuple]) -> tuple[list[ev.Event], str, list[ev.IterationFinished]]:
    """The events of `plan`'s calls on `task`; the last call claims the commit that merges."""
    out: list[ev.Event] = []
    finished: list[ev.IterationFinished] = []
    for n, call in enumerate(plan, 1):
        last = n == len(plan)
        outcome = ev.IterationOutcome.CLAIMED if last else call[3]
        commit = f"{task}-c{n}"
        event = _finished(task, n, (*call[:3], outcome, call[4]), commit)
        out.append(event)
        finished.append(event)
        if outcome is ev.IterationOutcome.CLAIMED:
            out.append(
                ev.TaskClaimed(
                    source=SRC, loop="a", task_id=task, attempt=1, commit=commit, branch="loop/a"
                )
            )
            if call[4] and not last:
                out.append(
                    ev.VerificationFailed(
                        source=GATE,
                        loop="a",
                        task_id=task,
                        commit=commit,
                        attempt=1,
                        verdict=ev.VerificationVerdict.CHECKS_FAILED,
                        reason="no",
                    )
                )
    merged = f"{task}-c{len(plan)}"
    out.append(
        ev.VerificationPassed(
            source=GATE, loop="a", task_id=task, commit=merged, attempt=1, criteria=[]
        )
    )
    return out, merged, finished


@settings(max_examples=150, deadline=None)
@given(plan=calls, other=calls, seed=st.integers(0, 2**16))
def test_a_receipt_adds_up_exactly_to_its_calls(plan: list, other: list, seed: int) -> None:
    mine, commit, finished = _story("T-1", plan)
    theirs, _, _ = _story("T-2", other)
    # Another task's events interleaved, and every event delivered twice somewhere.
    stream = mine + theirs
    random.Random(seed).shuffle(theirs)
    merged: list[ev.Event] = []
    rest = iter(theirs)
    for event in mine:
        merged += [event, next(rest, event)]
    merged += list(rest) + random.Random(seed).sample(stream, k=min(5, len(stream)))

    receipt = ev.fold_receipt(merged, "a", "T-1", commit)

    assert receipt.agent_calls == len(finished)
    assert receipt.cost_usd == math.fsum(e.cost_usd for e in finished if e.cost_usd is not None)
    assert receipt.uncosted_calls == sum(1 for e in finished if e.cost_usd is None)
    assert receipt.wall_time_s == math.fsum(e.duration_s for e in finished)
    for field in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert getattr(receipt.tokens, field) == sum(
            getattr(e.tokens, field) for e in finished if e.tokens is not None
        )
    # Every call but the one whose claim merged is a failed one.
    failed = finished[:-1]
    assert receipt.failed_calls == len(failed)
    assert receipt.failed_cost_usd == math.fsum(
        e.cost_usd for e in failed if e.cost_usd is not None
    )
    assert receipt.verification_runs == 1 + sum(
        1
        for e, call in zip(finished[:-1], plan[:-1], strict=True)
        if e.outcome is ev.IterationOutcome.CLAIMED and call[4]
    )


def test_a_task_merged_again_after_a_reset_gets_a_receipt_for_the_new_work() -> None:
    first, c1, _ = _story("T-1", [(1.0, None, 1.0, ev.IterationOutcome.CLAIMED, False)])
    done = ev.MergeCompleted(
        source=ev.Source(role=ev.Role.MERGE, instance="m"),
        loop="a",
        task_id="T-1",
        commit=c1,
        merged_commit="m1",
        main_before="m0",
    )
    again = [
        _finished("T-1", 9, (0.25, None, 2.0, ev.IterationOutcome.CLAIMED, False), "T-1-c9"),
    ]
    fold = ev.ReceiptFold()
    for event in [*first, done, *again]:
        fold.add(event)
    assert fold.receipt("a", "T-1", c1).cost_usd == 1.0  # the merge reported again: same
    second = fold.receipt("a", "T-1", "T-1-c9")
    assert (second.agent_calls, second.cost_usd, second.failed_calls) == (1, 0.25, 0)


def test_the_receipt_rides_in_merge_completed_and_round_trips() -> None:
    events, commit, _ = _story(
        "T-1", [(0.5, ev.TokenUsage(input_tokens=7), 3.0, ev.IterationOutcome.CLAIMED, False)]
    )
    receipt = ev.fold_receipt(events, "a", "T-1", commit)
    done = ev.MergeCompleted(
        source=ev.Source(role=ev.Role.MERGE, instance="m"),
        loop="a",
        task_id="T-1",
        commit=commit,
        merged_commit="m1",
        main_before="m0",
        receipt=receipt,
    )
    back = ev.decode(ev.encode(done))
    assert isinstance(back, ev.MergeCompleted) and back.receipt == receipt
    assert (receipt.tokens_in, receipt.cost_usd, receipt.agent_calls) == (7, 0.5, 1)


def test_a_reported_cost_is_checked_before_it_is_trusted() -> None:
    assert ev.checked_cost(0.25).usd == 0.25
    assert ev.checked_cost(0).usd == 0.0
    assert ev.checked_cost(None) == ev.CheckedCost(usd=None)
    for bad, why in (
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (-0.5, "negative"),
        (1e9, "above $1000"),
        ("3", "not a number"),
        (True, "not a number"),
    ):
        checked = ev.checked_cost(bad)
        assert checked.usd is None and checked.problem and why in checked.problem, bad
    assert [ev.checked_tokens(v) for v in (12, -4, 2.7, float("nan"), 10**12, "9", None)] == [
        12,
        0,
        2,
        0,
        ev.usage.MAX_CALL_TOKENS,
        0,
        0,
    ]


def test_a_model_is_priced_by_its_entry_or_the_entry_of_its_dated_id() -> None:
    table = ev.DEFAULT_PRICES
    assert ev.model_price("claude-sonnet-4-5-20250929", table) == table["claude-sonnet-4-5"]
    assert ev.model_price("claude-opus-4-1", table) == table["claude-opus-4-1"]
    assert ev.model_price("claude-opus-4-20250514", table) == table["claude-opus-4"]
    assert ev.model_price("claude-mock-model", table) is None
    assert ev.model_price(None, table) is None
    used = ev.TokenUsage(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=2_000_000)
    # 1M in at $3, 0.1M out at $15, 2M cache reads at $0.30.
    assert ev.price_tokens(used, table["claude-sonnet-4-5"]) == pytest.approx(5.1)
