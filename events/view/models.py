"""The view's value types: statuses, loops, tasks, escalations, merges, commands."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

import events as ev
from events import TaskStatus
from events.view.escalations import Escalation, EscalationStatus

STALE_AFTER = 2.0  # heartbeat intervals without a heartbeat before a loop is stale
DEAD_AFTER = 5.0  # ... and before it is taken for dead
DEFAULT_INTERVAL_S = 30.0  # until a heartbeat says otherwise
RECENT_EVENTS = 200
MONITOR_ACTIONS = 100
COMMANDS = 50
SEEN_IDS = 20_000  # dedupe window: delivery is at least once
TIMELINE = 120  # marks kept per loop for its timeline chart


class Health(StrEnum):
    """A loop's health from the age of its last heartbeat."""

    UNKNOWN = "unknown"  # no heartbeat seen yet
    HEALTHY = "healthy"
    STALE = "stale"  # more than STALE_AFTER intervals without a heartbeat
    DEAD = "dead"  # more than DEAD_AFTER intervals, or the worker stopped with an error
    STOPPED = "stopped"  # the worker exited on purpose


def silent_intervals(last_seen: datetime, interval_s: float, now: datetime) -> float:
    """Heartbeat intervals since a loop was last heard from: the one measure of liveness
    (`loops status`, the dashboard, and the monitor's stale-heartbeat rule)."""
    return max(0.0, (now - last_seen).total_seconds() / interval_s)


def is_stale(
    last_seen: datetime, interval_s: float, now: datetime, after: float = STALE_AFTER
) -> bool:
    """More than `after` intervals without a heartbeat (the monitor's policy may set
    its own `stale_intervals`; its default is `STALE_AFTER`)."""
    return silent_intervals(last_seen, interval_s, now) > after


class Attention(StrEnum):
    """What a loop needs from the operator, most urgent first (the dashboard groups
    loops by it, problem loops on top)."""

    BLOCKED = "blocked"  # a task is blocked, or the worker stopped with an error
    PERSON = "waiting on a person"  # an open escalation
    SILENT = "silent"  # no heartbeat for too long (stale or dead)
    FAILING = "failing"  # a task's last attempt failed; the loop retries it
    WORKING = "working"
    WAITING = "waiting"  # paused, or waiting out a usage limit
    STOPPED = "stopped"
    DONE = "done"  # every task merged

    @property
    def rank(self) -> int:
        return list(Attention).index(self)


class Mark(BaseModel):
    """One point of a loop's timeline: an iteration, a verdict or a merge."""

    ts: datetime
    kind: str  # iteration | failed | verified | rejected | merged | conflicted


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
    attempts: int = 0  # failed attempts, as test-state.json counts them
    iterations: int = 0
    reason: str = ""  # why it failed or is blocked/held
    commit: str | None = None  # the claimed (then verified) commit
    merged_commit: str | None = None
    claimed_at: datetime | None = None  # the claim now in verification or the merge queue
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
    outage_until: datetime | None = None  # the last outage back-off (a wait that is not usage)
    passed: int = 0
    total: int = 0
    # The worker listed its tasks (`loop.started`, `loop.stopped`): `passed`/`total`
    # count them, as the summaries do, not the heartbeat's copy of the file's count.
    listed: bool = False
    max_attempts: int | None = None  # failed attempts before a task is blocked
    interval_s: float = DEFAULT_INTERVAL_S
    last_seen: datetime | None = None  # the last heartbeat (or start)
    started: datetime | None = None  # this worker run's `loop.started`
    can_progress: bool | None = None  # as its last heartbeat said (None: not said yet)
    paused: bool = False  # paused by a person (`loops pause`)
    stopped_reason: str | None = None
    sandbox_warning: str | None = None  # the agent does not run sandboxed: why
    budget: str | None = None  # a budget near or at its limit, one line (None once raised)
    tokens: Tokens = Field(default_factory=Tokens)
    cost_usd: float = 0.0
    rate_per_hour: float | None = None
    eta_s: float | None = None
    tasks: dict[str, TaskView] = Field(default_factory=dict)
    attention: Attention = Attention.WORKING  # judged with health (`SystemView.refresh`)
    timeline: list[Mark] = Field(default_factory=list)

    def mark(self, ts: datetime, kind: str) -> None:
        self.timeline.append(Mark(ts=ts, kind=kind))
        del self.timeline[:-TIMELINE]

    def judge_attention(self, escalated: bool) -> Attention:
        """Where this loop belongs on the operator's list (health judged first)."""
        statuses = {t.status for t in self.tasks.values()}
        if escalated:
            return Attention.PERSON
        if self.status is ev.LoopStatus.ERROR or TaskStatus.BLOCKED in statuses:
            return Attention.BLOCKED
        if self.health in (Health.STALE, Health.DEAD):
            return Attention.SILENT
        if TaskStatus.FAILED in statuses:
            return Attention.FAILING
        if self.total and self.passed >= self.total:
            return Attention.DONE
        if self.status in (ev.LoopStatus.PAUSED, ev.LoopStatus.WAITING):
            return Attention.WAITING
        if self.status is ev.LoopStatus.STOPPED:
            return Attention.STOPPED
        return Attention.WORKING

    def recount(self) -> None:
        """`passed`/`total` from the task list, once the worker has listed it."""
        if self.listed:
            self.total = len(self.tasks)
            self.passed = sum(t.status is TaskStatus.MERGED for t in self.tasks.values())

    def settled(self, since: datetime) -> bool:
        """Nothing more to expect from the run of this loop that started at or after
        `since`: it stopped, or said that no task can move and it is not paused. A loop
        not heard from since then is not settled (it may be starting)."""
        if self.started is None or self.started < since:
            return False
        if self.status in (ev.LoopStatus.STOPPED, ev.LoopStatus.ERROR):
            return True
        return self.can_progress is False and not self.paused

    def judge(self, now: datetime) -> Health:
        """Health at `now` from the heartbeat's age against its interval."""
        if self.status is ev.LoopStatus.ERROR:
            return Health.DEAD
        if self.status is ev.LoopStatus.STOPPED:
            return Health.STOPPED
        if self.last_seen is None:
            return Health.UNKNOWN
        if is_stale(self.last_seen, self.interval_s, now, DEAD_AFTER):
            return Health.DEAD
        if is_stale(self.last_seen, self.interval_s, now):
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

    def sync(self, record: Escalation) -> None:
        """Show `record` (the one fold of `events.view.escalations`), in place."""
        self.loop, self.task_id, self.status = record.loop, record.task_id, record.status
        self.kind, self.severity, self.question = record.kind, record.severity, record.question
        self.options, self.repeat, self.raised = (
            list(record.options),
            record.repeat,
            record.raised_at,
        )
        self.acknowledged_by, self.answer = record.acknowledged_by, record.answer
        self.decision, self.answered_by = record.decision, record.answered_by
        self.closed_reason = record.closed_reason


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


class FlakyCheckView(BaseModel):
    """A merge check recorded flaky (`check.flaky`): failed, then passed unchanged."""

    command: str
    criterion: str
    count: int = 0  # the merge queue's count since a person last answered about it
    seen: int = 0  # flaky events seen in the stream for this command
    blocked: bool = False  # the last flake kept its batch off main (policy `block`)
    escalation_id: str | None = None  # a person was asked to fix it
    task_ids: list[str] = Field(default_factory=list)  # of the last batch it failed in
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


CLAIM_TO_MERGE_BUCKETS: tuple[float, ...] = (
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
)
"""Upper bounds (seconds) of the claim-to-merge histogram; +Inf is implied."""


class Histogram(BaseModel):
    """Observations in fixed buckets (cumulative counts are built by the reader)."""

    bounds: list[float] = Field(default_factory=lambda: list(CLAIM_TO_MERGE_BUCKETS))
    counts: list[int] = Field(default_factory=lambda: [0] * (len(CLAIM_TO_MERGE_BUCKETS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        slot = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[slot] += 1
        self.sum += value
        self.count += 1


class Counts(BaseModel):
    """What happened so far, counted per loop (the outer key): iterations by outcome,
    failures by kind, verifications by verdict, merges by result, monitor actions by
    kind, and the time from a claim to its merge. The Prometheus metrics read these."""

    iterations: dict[str, dict[str, int]] = Field(default_factory=dict)
    failures: dict[str, dict[str, int]] = Field(default_factory=dict)
    verifications: dict[str, dict[str, int]] = Field(default_factory=dict)
    merges: dict[str, dict[str, int]] = Field(default_factory=dict)
    monitor_actions: dict[str, dict[str, int]] = Field(default_factory=dict)
    escalations: dict[str, dict[str, int]] = Field(default_factory=dict)
    claim_to_merge: Histogram = Field(default_factory=Histogram)

    @staticmethod
    def bump(table: dict[str, dict[str, int]], loop: str | None, key: str) -> None:
        row = table.setdefault(loop or "-", {})
        row[key] = row.get(key, 0) + 1


class EventLine(BaseModel):
    """One event, summarised for a feed."""

    stream_id: str | None = None
    id: str
    ts: datetime
    type: str
    loop: str | None
    text: str
