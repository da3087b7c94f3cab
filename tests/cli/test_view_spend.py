"""Spend in the operator's view: receipts, each loop's spend over time, the cost per
merged task and the cost spent on tasks that never merged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import events as ev
from cli.view import SystemView

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
W = ev.Source(role=ev.Role.WORKER, instance="w:1")
MERGE = ev.Source(role=ev.Role.MERGE, instance="m:1")


def call(loop: str, task: str, n: int, cost: float | None) -> ev.IterationFinished:
    return ev.IterationFinished(
        source=W,
        loop=loop,
        ts=T0 + timedelta(seconds=n),
        task_id=task,
        iteration=n,
        attempt=1,
        outcome=ev.IterationOutcome.CONTINUE,
        duration_s=1.0,
        tokens=ev.TokenUsage(input_tokens=10, output_tokens=2),
        cost_usd=cost,
        cost_source=ev.CostSource.AGENT if cost is not None else ev.CostSource.NONE,
    )


def merged(loop: str, task: str, history: list[ev.Event]) -> ev.MergeCompleted:
    return ev.MergeCompleted(
        source=MERGE,
        loop=loop,
        task_id=task,
        commit="c",
        merged_commit="m",
        main_before="b",
        receipt=ev.fold_receipt(history, loop, task, "c"),
    )


def test_receipts_spend_over_time_and_the_project_summary() -> None:
    a = [call("a", "T-1", 1, 0.5), call("a", "T-1", 2, 0.25), call("a", "T-2", 3, None)]
    b = [call("b", "U-1", 4, 2.0)]
    history: list[ev.Event] = [*a, merged("a", "T-1", a), *b, call("a", "T-1", 5, 1.0)]
    view = SystemView.from_events([*history, history[0]])  # a duplicate changes nothing
    spend = view.to_dict(now=T0)["spend"]

    (row,) = spend["receipts"]
    assert row["loop"] == "a" and row["receipt"]["cost_usd"] == 0.75
    assert row["receipt"]["tokens_in"] == 20 and row["receipt"]["uncosted_calls"] == 0
    assert [p["cost_usd"] for p in spend["series"]["a"]] == [0.5, 0.75, 1.75]
    assert [p["cost_usd"] for p in spend["series"]["b"]] == [2.0]
    assert spend["cost_per_merged_task"] == 0.75
    # U-1 never merged; T-1 spent again after it merged (reset and re-run).
    assert (spend["unmerged_cost_usd"], spend["unmerged_tasks"]) == (3.0, 2)
    assert spend["uncosted_calls"] == 1
    lines = view.spend.lines()
    # No call claimed the merged commit here, so each call counts as a failed one.
    assert lines[1].startswith(
        "    a/T-1: $0.7500, 2 agent call(s) (2 failed, $0.7500), 20 tokens in"
    )
    assert lines[-1] == (
        "  Spend: $0.7500 on 1 merged task(s) ($0.7500 per merged task); $3.0000 on 2 "
        "task(s) never merged; 1 agent call(s) of unknown cost"
    )


def test_no_spend_no_lines() -> None:
    assert SystemView().spend.lines() == []
