"""Spend in the view: each merged task's receipt (from its `merge.completed`), each
loop's spend over time, and the project's summary (cost per merged task, cost spent
on tasks that never merged). `SystemView.apply` feeds `Spend.add` every new event."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

import events as ev

SPEND_TYPES = frozenset({"iteration.finished", "merge.completed"})  # what `Spend` reads
SPEND_POINTS = 500  # points kept per loop for its spend chart
RECEIPTS = 1000  # receipts kept (the newest)


class SpendPoint(BaseModel):
    """A loop's spend so far, after one agent call of known cost."""

    ts: datetime
    cost_usd: float


class ReceiptRow(BaseModel):
    loop: str
    ts: datetime
    receipt: ev.Receipt


class Spend(BaseModel):
    receipts: list[ReceiptRow] = Field(default_factory=list)
    series: dict[str, list[SpendPoint]] = Field(default_factory=dict)
    # Per `loop/task`: cost of its calls since it last merged (none: all merged).
    open_cost: dict[str, float] = Field(default_factory=dict, exclude=True)
    loop_cost: dict[str, float] = Field(default_factory=dict, exclude=True)
    merged_tasks: int = 0
    merged_cost_usd: float = 0.0
    uncosted_calls: int = 0  # calls whose cost is unknown (not counted as $0)

    def add(self, event: ev.Event) -> None:
        if isinstance(event, ev.IterationFinished):
            self._call(event)
        elif isinstance(event, ev.MergeCompleted) and event.receipt is not None:
            loop = event.loop or "-"
            self.receipts.append(ReceiptRow(loop=loop, ts=event.ts, receipt=event.receipt))
            del self.receipts[:-RECEIPTS]
            self.open_cost.pop(f"{loop}/{event.task_id}", None)
            self.merged_tasks += 1
            self.merged_cost_usd += event.receipt.cost_usd

    def _call(self, e: ev.IterationFinished) -> None:
        if e.cost_usd is None:
            self.uncosted_calls += 1
            return
        loop = e.loop or "-"
        key = f"{loop}/{e.task_id}"
        self.open_cost[key] = self.open_cost.get(key, 0.0) + e.cost_usd
        self.loop_cost[loop] = self.loop_cost.get(loop, 0.0) + e.cost_usd
        points = self.series.setdefault(loop, [])
        points.append(SpendPoint(ts=e.ts, cost_usd=self.loop_cost[loop]))
        del points[:-SPEND_POINTS]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_per_merged_task(self) -> float | None:
        return self.merged_cost_usd / self.merged_tasks if self.merged_tasks else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unmerged_cost_usd(self) -> float:
        """Spent on tasks that have not merged (or not since they were last reset)."""
        return math.fsum(self.open_cost.values())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unmerged_tasks(self) -> int:
        return sum(1 for cost in self.open_cost.values() if cost > 0)

    def lines(self) -> list[str]:
        """The summary's spend lines (`loops up`, `loops run`)."""
        if not self.receipts and not self.open_cost and not self.uncosted_calls:
            return []
        out = ["  Receipts (merged tasks):"] if self.receipts else []
        out += [f"    {row.loop}/{receipt_line(row.receipt)}" for row in self.receipts]
        per = self.cost_per_merged_task
        spend = f"  Spend: ${self.merged_cost_usd:.4f} on {self.merged_tasks} merged task(s)"
        spend += f" (${per:.4f} per merged task)" if per is not None else ""
        spend += f"; ${self.unmerged_cost_usd:.4f} on {self.unmerged_tasks} task(s) never merged"
        if self.uncosted_calls:
            spend += f"; {self.uncosted_calls} agent call(s) of unknown cost"
        return [*out, spend]


def receipt_line(r: ev.Receipt) -> str:
    """One line of a receipt, for the terminal."""
    unknown = f" + {r.uncosted_calls} call(s) of unknown cost" if r.uncosted_calls else ""
    return (
        f"{r.task_id}: ${r.cost_usd:.4f}{unknown}, {r.agent_calls} agent call(s) "
        f"({r.failed_calls} failed, ${r.failed_cost_usd:.4f}), {r.tokens_in} tokens in / "
        f"{r.tokens_out} out, {r.wall_time_s:.0f}s agent time, "
        f"{r.verification_runs} verification run(s)"
    )


def spend_dict(spend: Spend) -> dict[str, Any]:
    """JSON-ready spend, receipts with their token totals in and out."""
    data = spend.model_dump(mode="json")
    for row, out in zip(spend.receipts, data["receipts"], strict=True):
        out["receipt"]["tokens_in"] = row.receipt.tokens_in
        out["receipt"]["tokens_out"] = row.receipt.tokens_out
    return data
