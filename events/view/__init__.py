"""The operator's picture of the running system: a pure fold of events.

`SystemView.from_events(events)` builds it from a replay; `view.apply(event)` keeps it
current from a tail. Nothing here touches Redis or the clock, except that health is
judged at a time you pass (`refresh(now)`, `to_json(now=...)`), so the same events
always give the same view. `loops status`, `loops escalations`, the dashboard and the
`up`/`run` summaries (`summary.py`) all read this one fold.
"""

from events import TaskStatus
from events.view.escalations import EscalationStatus
from events.view.models import (
    DEAD_AFTER,
    STALE_AFTER,
    Attention,
    CommandView,
    Counts,
    EscalationView,
    EventLine,
    FlakyCheckView,
    Health,
    Histogram,
    LoopView,
    Mark,
    MergeEntry,
    MergeStatus,
    MonitorActionView,
    TaskView,
    Tokens,
    Verification,
)
from events.view.system import SystemView
from events.view.text import clean, event_fields, event_line

__all__ = [
    "DEAD_AFTER",
    "STALE_AFTER",
    "Attention",
    "CommandView",
    "Counts",
    "EscalationStatus",
    "EscalationView",
    "EventLine",
    "FlakyCheckView",
    "Health",
    "Histogram",
    "LoopView",
    "Mark",
    "MergeEntry",
    "MergeStatus",
    "MonitorActionView",
    "SystemView",
    "TaskStatus",
    "TaskView",
    "Tokens",
    "Verification",
    "clean",
    "event_fields",
    "event_line",
]
