"""The operator's picture of the running system: a pure fold of events.

`SystemView.from_events(events)` builds it from a replay; `view.apply(event)` keeps it
current from a tail. Nothing here touches Redis or the clock, except that health is
judged at a time you pass (`refresh(now)`, `to_json(now=...)`), so the same events
always give the same view. `loops status`, `loops escalations` and the dashboard all
read this one fold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

import events as ev

STALE_AFTER = 2.0  # heartbeat intervals without a heartbeat before a loop is stale
DEAD_AFTER = 5.0  # ... and before it is taken for dead
DEFAULT_INTERVAL_S = 30.0  # until a heartbeat says otherwise
RECENT_EVENTS = 200
MONITOR_ACTIONS = 100
COMMANDS = 50
SEEN_IDS = 20_000  # dedupe window: delivery is at least once


class TaskStatus(StrEnum):
    """Where a task is, as far as the events tell."""

    PENDING = "pending"
    RUNNING = "running"
    CLAIMED = "claimed"  # the agent says done: waiting for the gate
    VERIFYING = "verifying"
    VERIFIED = "verified"
    QUEUED = "queued"  # in the merge queue
    MERGED = "merged"  # the only "passed" there is
    FAILED = "failed"  # the last attempt failed; the loop retries it
    BLOCKED = "blocked"
    HELD = "held"  # held by the PM


class Health(StrEnum):
    """A loop's health from the age of its last heartbeat."""

    UNKNOWN = "unknown"  # no heartbeat seen yet
    HEALTHY = "healthy"
    STALE = "stale"  # more than STALE_AFTER intervals without a heartbeat
    DEAD = "dead"  # more than DEAD_AFTER intervals, or the worker stopped with an error
    STOPPED = "stopped"  # the worker exited on purpose


class EscalationStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        """Still waiting for a person (answerable)."""
        return self in (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)


class MergeStatus(StrEnum):
    QUEUED = "queued"
    MERGING = "merging"  # the head of the queue: what the merge manager works on
    MERGED = "merged"
    CONFLICTED = "conflicted"


class Tokens(BaseModel):
    """Token counts summed over iterations."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def add(self, usage: ev.TokenUsage) -> None:
        self.input += usage.input_tokens
        self.output += usage.output_tokens
        self.cache_read += usage.cache_read_tokens
        self.cache_write += usage.cache_write_tokens


class Verification(BaseModel):
    """The gate's last verdict on a task, with the evidence for each criterion."""

    passed: bool | None = None  # None while running
    verdict: str | None = None
    commit: str
    attempt: int
    reason: str = ""
    criteria: list[ev.CriterionResult] = Field(default_factory=list)
    flagged_files: list[str] = Field(default_factory=list)
    ts: datetime


class TaskView(BaseModel):
    loop: str
    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    iterations: int = 0
    reason: str = ""  # why it failed or is blocked/held
    commit: str | None = None  # the claimed (then verified) commit
    merged_commit: str | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    cost_usd: float = 0.0
    verification: Verification | None = None
    updated: datetime | None = None


class LoopView(BaseModel):
    name: str
    status: ev.LoopStatus = ev.LoopStatus.STARTING
    health: Health = Health.UNKNOWN
    agent: str | None = None
    host: str | None = None
    pid: int | None = None
    task_id: str | None = None
    iteration: int | None = None
    waiting_until: datetime | None = None
    passed: int = 0
    total: int = 0
    interval_s: float = DEFAULT_INTERVAL_S
    last_seen: datetime | None = None  # the last heartbeat (or start)
    stopped_reason: str | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    cost_usd: float = 0.0
    rate_per_hour: float | None = None
    eta_s: float | None = None
    tasks: dict[str, TaskView] = Field(default_factory=dict)

    def judge(self, now: datetime) -> Health:
        """Health at `now` from the heartbeat's age against its interval."""
        if self.status is ev.LoopStatus.ERROR:
            return Health.DEAD
        if self.status is ev.LoopStatus.STOPPED:
            return Health.STOPPED
        if self.last_seen is None:
            return Health.UNKNOWN
        age = (now - self.last_seen).total_seconds()
        if age > DEAD_AFTER * self.interval_s:
            return Health.DEAD
        if age > STALE_AFTER * self.interval_s:
            return Health.STALE
        return Health.HEALTHY

    def task(self, task_id: str) -> TaskView:
        if task_id not in self.tasks:
            self.tasks[task_id] = TaskView(loop=self.name, task_id=task_id)
        return self.tasks[task_id]


class EscalationView(BaseModel):
    id: str
    loop: str | None = None
    task_id: str | None = None
    status: EscalationStatus = EscalationStatus.OPEN
    kind: ev.EscalationKind | None = None
    severity: ev.Severity | None = None
    question: str = ""
    options: list[str] = Field(default_factory=list)
    repeat: int = 0
    raised: datetime | None = None
    acknowledged_by: str | None = None
    answer: str | None = None
    decision: ev.Decision | None = None
    answered_by: str | None = None
    closed_reason: str | None = None


class MergeEntry(BaseModel):
    loop: str
    task_id: str
    commit: str
    status: MergeStatus = MergeStatus.QUEUED
    position: int = 0
    queued: datetime
    merged_commit: str | None = None
    files: list[str] = Field(default_factory=list)
    reason: str = ""
    ts: datetime


class MonitorActionView(BaseModel):
    ts: datetime
    loop: str | None
    action: ev.MonitorActionKind
    rule: str
    reason: str
    task_id: str | None = None
    hint: str | None = None


class CommandView(BaseModel):
    id: str
    type: str
    loop: str | None
    ts: datetime
    by: ev.Role
    task_id: str | None = None
    acknowledged: bool = False
    detail: str = ""


class EventLine(BaseModel):
    """One event, summarised for a feed."""

    stream_id: str | None = None
    id: str
    ts: datetime
    type: str
    loop: str | None
    text: str


class SystemView(BaseModel):
    """Loops and their tasks, escalations, the merge queue, monitor actions, commands and
    recent events: everything `loops status` and the dashboard show."""

    loops: dict[str, LoopView] = Field(default_factory=dict)
    escalations: dict[str, EscalationView] = Field(default_factory=dict)
    merges: list[MergeEntry] = Field(default_factory=list)
    monitor_actions: list[MonitorActionView] = Field(default_factory=list)
    commands: list[CommandView] = Field(default_factory=list)
    recent: list[EventLine] = Field(default_factory=list)
    last_stream_id: str | None = None
    last_event: datetime | None = None
    events_seen: int = 0
    as_of: datetime | None = None
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
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
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
        for loop in self.loops.values():
            loop.health = loop.judge(self.as_of)
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
        data["totals"] = {
            "loops": len(self.loops),
            "passed": sum(loop.passed for loop in self.loops.values()),
            "total": sum(loop.total for loop in self.loops.values()),
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "open_escalations": len(self.open_escalations()),
            "merge_queue": len(self.merge_queue()),
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


# ---------------------------------------------------------------------- the fold


def _loop_started(view: SystemView, e: ev.LoopStarted) -> None:
    loop = view.loop(e.loop)
    loop.status = ev.LoopStatus.STARTING
    loop.agent, loop.host, loop.pid = e.agent, e.host, e.pid
    loop.total, loop.passed = e.tasks_total, e.tasks_passed
    loop.last_seen = e.ts
    loop.stopped_reason = None


def _heartbeat(view: SystemView, e: ev.LoopHeartbeat) -> None:
    loop = view.loop(e.loop)
    loop.status = e.status
    loop.host, loop.pid, loop.interval_s = e.host, e.pid, e.interval_s
    loop.task_id, loop.iteration, loop.waiting_until = e.task_id, e.iteration, e.waiting_until
    loop.passed, loop.total = e.passed, e.total
    loop.last_seen = e.ts


def _loop_stopped(view: SystemView, e: ev.LoopStopped) -> None:
    loop = view.loop(e.loop)
    loop.status = e.status
    loop.stopped_reason = e.reason
    loop.last_seen = e.ts


def _task_started(view: SystemView, e: ev.TaskStarted) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts, task.reason = TaskStatus.RUNNING, e.attempt, ""
    loop = view.loop(e.loop)
    loop.task_id = e.task_id
    if loop.status in (ev.LoopStatus.STARTING, ev.LoopStatus.STOPPED):
        loop.status = ev.LoopStatus.RUNNING


def _iteration_started(view: SystemView, e: ev.IterationStarted) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts = TaskStatus.RUNNING, e.attempt
    task.iterations = max(task.iterations, e.iteration)
    loop = view.loop(e.loop)
    loop.task_id, loop.iteration, loop.agent = e.task_id, e.iteration, e.agent


def _iteration_finished(view: SystemView, e: ev.IterationFinished) -> None:
    task = view._task(e, e.task_id)
    task.iterations = max(task.iterations, e.iteration)
    loop = view.loop(e.loop)
    loop.iteration = max(loop.iteration or 0, e.iteration)
    if e.tokens is not None:
        task.tokens.add(e.tokens)
        loop.tokens.add(e.tokens)
    if e.cost_usd:
        task.cost_usd += e.cost_usd
        loop.cost_usd += e.cost_usd
    if e.outcome is ev.IterationOutcome.CLAIMED and task.status is TaskStatus.RUNNING:
        task.status = TaskStatus.CLAIMED
    if e.outcome is ev.IterationOutcome.FAILED and e.failure is not None:
        task.reason = f"{e.failure.value}: {e.failure_detail or ''}".rstrip(": ")


def _claimed(view: SystemView, e: ev.TaskClaimed) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts, task.commit = TaskStatus.CLAIMED, e.attempt, e.commit


def _verification_started(view: SystemView, e: ev.VerificationStarted) -> None:
    task = view._task(e, e.task_id)
    task.status, task.commit = TaskStatus.VERIFYING, e.commit
    task.verification = Verification(commit=e.commit, attempt=e.attempt, ts=e.ts)


def _verification_passed(view: SystemView, e: ev.VerificationPassed) -> None:
    task = view._task(e, e.task_id)
    task.status, task.commit = TaskStatus.VERIFIED, e.commit
    task.verification = Verification(
        passed=True,
        verdict=ev.VerificationVerdict.PASSED.value,
        commit=e.commit,
        attempt=e.attempt,
        criteria=list(e.criteria),
        flagged_files=list(e.flagged_files),
        ts=e.ts,
    )


def _verification_failed(view: SystemView, e: ev.VerificationFailed) -> None:
    task = view._task(e, e.task_id)
    task.status, task.reason = TaskStatus.FAILED, e.reason
    task.verification = Verification(
        passed=False,
        verdict=e.verdict.value,
        commit=e.commit,
        attempt=e.attempt,
        reason=e.reason,
        criteria=list(e.criteria),
        flagged_files=list(e.flagged_files),
        ts=e.ts,
    )


def _merge_queued(view: SystemView, e: ev.MergeQueued) -> None:
    task = view._task(e, e.task_id)
    task.status = TaskStatus.QUEUED
    entry = view._merge_entry(e, e.task_id, e.commit)
    if entry is None or entry.status not in (MergeStatus.QUEUED, MergeStatus.MERGING):
        entry = MergeEntry(
            loop=e.loop or "-", task_id=e.task_id, commit=e.commit, queued=e.ts, ts=e.ts
        )
        view.merges.append(entry)
    entry.position, entry.ts = e.position, e.ts
    view._queue_head()


def _merge_done(
    view: SystemView, e: ev.Event, task_id: str, commit: str, status: MergeStatus
) -> MergeEntry:
    entry = view._merge_entry(e, task_id, commit)
    if entry is None:
        entry = MergeEntry(loop=e.loop or "-", task_id=task_id, commit=commit, queued=e.ts, ts=e.ts)
        view.merges.append(entry)
    entry.status, entry.ts = status, e.ts
    # Keep the finished entries bounded; the queue itself is never trimmed.
    done = [m for m in view.merges if m.status in (MergeStatus.MERGED, MergeStatus.CONFLICTED)]
    for old in done[:-RECENT_EVENTS]:
        view.merges.remove(old)
    view._queue_head()
    return entry


def _merge_completed(view: SystemView, e: ev.MergeCompleted) -> None:
    entry = _merge_done(view, e, e.task_id, e.commit, MergeStatus.MERGED)
    entry.merged_commit = e.merged_commit
    task = _merged(view, e, e.task_id)
    task.merged_commit = e.merged_commit


def _merge_conflicted(view: SystemView, e: ev.MergeConflicted) -> None:
    entry = _merge_done(view, e, e.task_id, e.commit, MergeStatus.CONFLICTED)
    entry.files, entry.reason = list(e.files), e.reason
    task = view._task(e, e.task_id)
    task.status = TaskStatus.FAILED
    task.reason = f"merge {e.reason}: {', '.join(e.files)}".rstrip(": ")


def _merged(view: SystemView, e: ev.Event, task_id: str) -> TaskView:
    task = view._task(e, task_id)
    if task.status is not TaskStatus.MERGED:
        # Until the next heartbeat brings the worker's own count.
        loop = view.loop(e.loop)
        loop.passed = min(loop.passed + 1, loop.total) if loop.total else loop.passed + 1
        task.status = TaskStatus.MERGED
    return task


def _task_passed(view: SystemView, e: ev.TaskPassed) -> None:
    task = _merged(view, e, e.task_id)
    task.attempts = e.attempt
    task.commit, task.merged_commit, task.reason = e.commit, e.merged_commit, ""


def _task_failed(view: SystemView, e: ev.TaskFailed) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts, task.reason = TaskStatus.FAILED, e.attempt, e.reason


def _task_blocked(view: SystemView, e: ev.TaskBlocked) -> None:
    task = view._task(e, e.task_id)
    task.status, task.reason = TaskStatus.BLOCKED, e.reason


def _task_held(view: SystemView, e: ev.TaskHeld) -> None:
    task = view._task(e, e.task_id)
    task.status, task.reason = TaskStatus.HELD, e.reason


def _task_released(view: SystemView, e: ev.TaskReleased) -> None:
    task = view._task(e, e.task_id)
    if task.status is TaskStatus.HELD:
        task.status, task.reason = TaskStatus.PENDING, ""


def _monitor_action(view: SystemView, e: ev.MonitorAction) -> None:
    view.monitor_actions.append(
        MonitorActionView(
            ts=e.ts,
            loop=e.loop,
            action=e.action,
            rule=e.rule,
            reason=e.reason,
            task_id=e.task_id,
            hint=e.hint,
        )
    )
    del view.monitor_actions[:-MONITOR_ACTIONS]


def _progress(view: SystemView, e: ev.ProgressReported) -> None:
    loop = view.loop(e.loop)
    loop.passed, loop.total = e.passed, e.total
    loop.rate_per_hour, loop.eta_s = e.rate_per_hour, e.eta_s


def _escalation_raised(view: SystemView, e: ev.EscalationRaised) -> None:
    esc = view.escalation(e.escalation_id)
    esc.loop, esc.task_id, esc.kind, esc.severity = e.loop, e.task_id, e.kind, e.severity
    esc.question, esc.options, esc.repeat = e.question, list(e.options), e.repeat
    if esc.raised is None:
        esc.raised = e.ts


def _escalation_acknowledged(view: SystemView, e: ev.EscalationAcknowledged) -> None:
    esc = view.escalation(e.escalation_id)
    esc.acknowledged_by = e.by
    if esc.status is EscalationStatus.OPEN:
        esc.status = EscalationStatus.ACKNOWLEDGED


def _escalation_answered(view: SystemView, e: ev.EscalationAnswered) -> None:
    esc = view.escalation(e.escalation_id)
    if esc.status.is_open:
        esc.status = EscalationStatus.ANSWERED
        esc.answer, esc.decision, esc.answered_by = e.answer, e.decision, e.by


def _escalation_delivered(view: SystemView, e: ev.EscalationDelivered) -> None:
    esc = view.escalation(e.escalation_id)
    if esc.status is not EscalationStatus.EXPIRED:
        esc.status = EscalationStatus.DELIVERED


def _escalation_expired(view: SystemView, e: ev.EscalationExpired) -> None:
    esc = view.escalation(e.escalation_id)
    if esc.status.is_open:
        esc.status, esc.closed_reason = EscalationStatus.EXPIRED, e.reason


def _command(view: SystemView, e: ev.Event) -> None:
    view.commands.append(
        CommandView(
            id=e.id,
            type=e.type,
            loop=e.loop,
            ts=e.ts,
            by=e.source.role,
            task_id=getattr(e, "task_id", None),
        )
    )
    del view.commands[:-COMMANDS]


def _acknowledged(view: SystemView, e: ev.CommandAcknowledged) -> None:
    command = next((c for c in view.commands if c.id == e.command_id), None)
    if command is None or command.acknowledged:
        return
    command.acknowledged, command.detail = True, e.detail
    if command.loop is None:
        return
    loop = view.loop(command.loop)
    if command.type == "loop.pause":
        loop.status = ev.LoopStatus.PAUSED
    elif command.type == "loop.resume" and loop.status is ev.LoopStatus.PAUSED:
        loop.status = ev.LoopStatus.RUNNING
    elif command.type == "task.reset" and command.task_id is not None:
        task = loop.task(command.task_id)
        task.status, task.attempts, task.reason, task.updated = TaskStatus.PENDING, 0, "", e.ts


_HANDLERS: dict[type[ev.Event], Any] = {
    ev.LoopStarted: _loop_started,
    ev.LoopHeartbeat: _heartbeat,
    ev.LoopStopped: _loop_stopped,
    ev.TaskStarted: _task_started,
    ev.IterationStarted: _iteration_started,
    ev.IterationFinished: _iteration_finished,
    ev.TaskClaimed: _claimed,
    ev.VerificationStarted: _verification_started,
    ev.VerificationPassed: _verification_passed,
    ev.VerificationFailed: _verification_failed,
    ev.MergeQueued: _merge_queued,
    ev.MergeCompleted: _merge_completed,
    ev.MergeConflicted: _merge_conflicted,
    ev.TaskPassed: _task_passed,
    ev.TaskFailed: _task_failed,
    ev.TaskBlocked: _task_blocked,
    ev.TaskHeld: _task_held,
    ev.TaskReleased: _task_released,
    ev.MonitorAction: _monitor_action,
    ev.ProgressReported: _progress,
    ev.EscalationRaised: _escalation_raised,
    ev.EscalationAcknowledged: _escalation_acknowledged,
    ev.EscalationAnswered: _escalation_answered,
    ev.EscalationDelivered: _escalation_delivered,
    ev.EscalationExpired: _escalation_expired,
    ev.LoopPause: _command,
    ev.LoopResume: _command,
    ev.LoopStop: _command,
    ev.TaskReset: _command,
    ev.TaskHint: _command,
    ev.CommandAcknowledged: _acknowledged,
}

# ---------------------------------------------------------------------- one-line text

_ENVELOPE = set(ev.Event.model_fields)
MAX_VALUE = 120


def clean(text: str, limit: int = MAX_VALUE) -> str:
    """`text` safe for a terminal: control characters escaped (agent output must not
    drive the operator's terminal), and cut to `limit` characters."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _value(value: Any) -> str:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (not value or " " in value) else value
    if isinstance(value, BaseModel | list | dict):
        data = _plain(value)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def event_fields(event: ev.Event) -> str:
    """The event's own fields as `key=value ...`, leaving out unset ones."""
    parts = []
    for name, field in type(event).model_fields.items():
        if name in _ENVELOPE:
            continue
        value = getattr(event, name)
        if value is None or value == [] or (value == field.default and name != "status"):
            continue
        parts.append(f"{name}={clean(_value(value))}")
    return " ".join(parts)


def event_line(event: ev.Event) -> str:
    """`HH:MM:SS loop type key=value ...` in local time, as `loops events` prints it."""
    stamp = event.ts.astimezone().strftime("%H:%M:%S")
    return f"{stamp} {clean(event.loop or '-', 40)} {event.type} {event_fields(event)}".rstrip()
