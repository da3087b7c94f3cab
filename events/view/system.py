"""`SystemView`: the whole picture, built by folding events in one at a time."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

import events as ev
from events.view.escalations import Escalation
from events.view.fold import HANDLERS
from events.view.models import (
    RECENT_EVENTS,
    SEEN_IDS,
    CommandView,
    Counts,
    EscalationView,
    EventLine,
    FlakyCheckView,
    LoopView,
    MergeEntry,
    MergeStatus,
    MonitorActionView,
    TaskView,
)
from events.view.spend import Spend, spend_dict
from events.view.text import event_fields


class SystemView(BaseModel):
    """Loops and their tasks, escalations, the merge queue, flaky merge checks, monitor
    actions, commands and recent events: everything `loops status` and the dashboard
    show."""

    loops: dict[str, LoopView] = Field(default_factory=dict)
    escalations: dict[str, EscalationView] = Field(default_factory=dict)
    escalation_records: dict[str, Escalation] = Field(default_factory=dict, exclude=True)
    merges: list[MergeEntry] = Field(default_factory=list)
    monitor_actions: list[MonitorActionView] = Field(default_factory=list)
    flaky: dict[str, FlakyCheckView] = Field(default_factory=dict)  # by command
    commands: list[CommandView] = Field(default_factory=list)
    recent: list[EventLine] = Field(default_factory=list)
    counts: Counts = Field(default_factory=Counts)
    last_stream_id: str | None = None
    last_event: datetime | None = None
    events_seen: int = 0
    as_of: datetime | None = None
    spend: Spend = Field(default_factory=Spend)  # receipts, spend over time, per merged task
    seen: dict[str, None] = Field(default_factory=dict, exclude=True)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_events(cls, items: Iterable[ev.Event | tuple[str, ev.Event]]) -> SystemView:
        """The view after every event of `items` (events, or (stream id, event) pairs
        as `bus.replay` yields them)."""
        view = cls()
        for item in items:
            if isinstance(item, tuple):
                view.apply(item[1], stream_id=item[0])
            else:
                view.apply(item)
        return view

    def apply(self, event: ev.Event, stream_id: str | None = None) -> bool:
        """Fold one event in. Returns False for a duplicate (same event id), which
        changes nothing: delivery is at least once."""
        if event.id in self.seen:
            return False
        self.seen[event.id] = None
        if len(self.seen) > SEEN_IDS:
            del self.seen[next(iter(self.seen))]
        self.events_seen += 1
        if stream_id is not None:
            self.last_stream_id = stream_id
        self.last_event = event.ts
        handler = HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
            if event.loop in self.loops:
                self.loops[event.loop].recount()
        self.spend.add(event)
        self.recent.append(
            EventLine(
                stream_id=stream_id,
                id=event.id,
                ts=event.ts,
                type=event.type,
                loop=event.loop,
                text=event_fields(event),
            )
        )
        del self.recent[:-RECENT_EVENTS]
        return True

    def loop(self, name: str | None) -> LoopView:
        key = name or "-"
        if key not in self.loops:
            self.loops[key] = LoopView(name=key)
        return self.loops[key]

    def escalation(self, escalation_id: str) -> EscalationView:
        if escalation_id not in self.escalations:
            self.escalations[escalation_id] = EscalationView(id=escalation_id)
        return self.escalations[escalation_id]

    # ------------------------------------------------------------------ reading

    def refresh(self, now: datetime | None = None) -> SystemView:
        """Judge every loop's health at `now` (default: the wall clock)."""
        self.as_of = now or datetime.now(UTC)
        escalated = {e.loop for e in self.open_escalations()}
        for loop in self.loops.values():
            loop.health = loop.judge(self.as_of)
            loop.attention = loop.judge_attention(loop.name in escalated)
        return self

    def open_escalations(self) -> list[EscalationView]:
        return [e for e in self.escalations.values() if e.status.is_open]

    def merge_queue(self) -> list[MergeEntry]:
        """Entries not merged or conflicted yet, head first."""
        return [m for m in self.merges if m.status in (MergeStatus.QUEUED, MergeStatus.MERGING)]

    @property
    def tokens(self) -> int:
        return sum(loop.tokens.total for loop in self.loops.values())

    @property
    def cost_usd(self) -> float:
        return sum(loop.cost_usd for loop in self.loops.values())

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """Plain JSON-ready data (health judged at `now`), with totals."""
        self.refresh(now)
        data = self.model_dump(mode="json")
        data["spend"] = spend_dict(self.spend)
        data["totals"] = {
            "loops": len(self.loops),
            "passed": sum(loop.passed for loop in self.loops.values()),
            "total": sum(loop.total for loop in self.loops.values()),
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "open_escalations": len(self.open_escalations()),
            "merge_queue": len(self.merge_queue()),
            "flaky_checks": sum(f.seen for f in self.flaky.values()),
        }
        return data

    def to_json(self, now: datetime | None = None, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(now), indent=indent)

    # ------------------------------------------------------------------ internals

    def _task(self, event: ev.Event, task_id: str) -> TaskView:
        task = self.loop(event.loop).task(task_id)
        task.updated = event.ts
        return task

    def _queue_head(self) -> None:
        queue = self.merge_queue()
        for i, entry in enumerate(queue):
            entry.status = MergeStatus.MERGING if i == 0 else MergeStatus.QUEUED

    def _merge_entry(self, event: ev.Event, task_id: str, commit: str) -> MergeEntry | None:
        for entry in reversed(self.merges):
            same_task = entry.loop == (event.loop or "-") and entry.task_id == task_id
            if same_task and (entry.commit == commit or entry.status is MergeStatus.MERGING):
                return entry
        return None
