"""Every event of the system. Docstrings say when each is published; the class
attributes say who produces and who consumes it (docs/EVENT-CATALOG.md is generated
from this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from events.envelope import Event, Role
from events.types import (
    AgentSign,
    BudgetLevel,
    BudgetMetric,
    CriterionResult,
    Decision,
    DiffStat,
    EscalationKind,
    FailureKind,
    IterationOutcome,
    LoopStatus,
    MergeRefusal,
    MonitorActionKind,
    Severity,
    TaskSnapshot,
    TokenUsage,
    VerificationVerdict,
)
from events.usage import CostSource, Receipt

W, MON, PM, HUM, GATE, MERGE, DASH, OP = (
    Role.WORKER,
    Role.MONITOR,
    Role.PM,
    Role.HUMAN,
    Role.GATE,
    Role.MERGE,
    Role.DASHBOARD,
    Role.OPERATOR,
)
EVERYONE = (W, MON, PM, HUM, GATE, MERGE, DASH)

# --------------------------------------------------------------------------- lifecycle


class LoopStarted(Event):
    """A loop worker started (or restarted) and is about to choose a task."""

    type: Literal["loop.started"] = "loop.started"
    agent: str
    pid: int
    host: str
    tasks_total: int = 0
    tasks_passed: int = 0
    # None: the agent runs sandboxed; else the one line saying it does not, and why
    sandbox_warning: str | None = None
    # Every task of the loop as its state file has it (None: not said, by an older
    # worker), and the failed attempts after which a task is blocked.
    tasks: list[TaskSnapshot] | None = None
    max_attempts: int | None = None
    producers = (W,)
    consumers = (MON, PM, DASH)


class LoopHeartbeat(Event):
    """Every `interval_s` seconds while a loop worker is alive, whatever it is doing.
    While an agent runs, the `agent_*` fields say since when, and when it last gave a
    sign of life (the worker's clock): the monitor's silent-agent rule reads them."""

    type: Literal["loop.heartbeat"] = "loop.heartbeat"
    status: LoopStatus
    pid: int
    host: str
    interval_s: float
    task_id: str | None = None
    iteration: int | None = None
    waiting_until: datetime | None = None  # set while waiting out a usage limit
    passed: int = 0
    total: int = 0
    agent_started_at: datetime | None = None  # this iteration's agent run began; None: none runs
    agent_activity_at: datetime | None = None  # its last sign of life (None: none since start)
    agent_activity: AgentSign | None = None  # what that sign was
    agent_pid: int | None = None  # the agent's process (group leader), for the operator
    # What `loops up` decides "idle" from (through the read model): whether some task
    # can still move (None: not judged yet), and whether a person paused the loop.
    # Published at once when either changes, not only every interval.
    can_progress: bool | None = None
    paused: bool = False
    producers = (W,)
    consumers = (MON, DASH)


class LoopStopped(Event):
    """A loop worker exits: finished, stopped by a command, or crashed with an error."""

    type: Literal["loop.stopped"] = "loop.stopped"
    status: LoopStatus
    reason: str
    # Every task as the state file has it now (as in `loop.started`): tasks added by
    # hand while it ran are in it (None: not said, by an older worker).
    tasks: list[TaskSnapshot] | None = None
    producers = (W,)
    consumers = (MON, PM, DASH)


# --------------------------------------------------------------------------- work


class TaskStarted(Event):
    """A loop chose a task and begins (or resumes) an attempt on it."""

    type: Literal["task.started"] = "task.started"
    task_id: str
    attempt: int
    producers = (W,)
    consumers = (MON, PM, DASH)


class IterationStarted(Event):
    """Just before the agent is run once on the task."""

    type: Literal["iteration.started"] = "iteration.started"
    task_id: str
    iteration: int
    attempt: int
    agent: str
    prompt_bytes: int
    session_id: str | None = None
    producers = (W,)
    consumers = (MON, DASH)


class IterationFinished(Event):
    """After one agent run, with its evidence: what it changed, ran, cost and said."""

    type: Literal["iteration.finished"] = "iteration.finished"
    task_id: str
    iteration: int
    attempt: int
    outcome: IterationOutcome
    failure: FailureKind | None = None
    failure_detail: str | None = None
    duration_s: float
    changed_files: list[str] = Field(default_factory=list)
    diff_stat: DiffStat = DiffStat()
    commands: list[str] = Field(default_factory=list)
    tokens: TokenUsage | None = None
    cost_usd: float | None = None
    # where cost_usd came from (None: recorded before sources were); `model`: priced as
    cost_source: CostSource | None = None
    model: str | None = None
    reply_chars: int = 0
    reply_tail: str = ""
    permission_denials: int = 0
    commit: str | None = None
    session_id: str | None = None
    retry_at: datetime | None = None  # usage limit: when the agent may run again
    counted: bool = True  # False when the iteration does not count (usage limit, outage)
    producers = (W,)
    consumers = (MON, PM, DASH)


class UsageLimited(Event):
    """An agent hit its account's usage or rate limit: no loop calls that account
    before `reset_at` (the shared record is `bus.usage.UsageWindows`). Published by the
    loop that hit it, once per window it recorded."""

    type: Literal["usage.limited"] = "usage.limited"
    account: str  # `bus.usage.account_key(...)`: runner kind and a hash, never a secret
    runner: str  # the agent kind: claude, anthropic, command
    reset_at: datetime
    estimated: bool = False  # True when the agent gave no reset time (the loop's back-off)
    task_id: str | None = None
    iteration: int | None = None
    producers = (W,)
    consumers = (DASH,)


class BudgetWarned(Event):
    """A budget passed its warning threshold (`warn_at`, default 80%): published once
    per scope, metric and limit (a raised limit can warn again). `task_id` is set for
    a task's budget."""

    type: Literal["budget.warned"] = "budget.warned"
    level: BudgetLevel
    scope: str  # `task:LOOP/TASK`, `loop:LOOP`, `project` or `day`
    metric: BudgetMetric
    spent: float
    limit: float
    threshold: float  # the fraction of the limit that warns
    task_id: str | None = None
    producers = (W,)
    consumers = (DASH,)


class BudgetExhausted(Event):
    """A budget is spent: no new agent call starts at its level until a person raises
    it (`loops budget`, or an answer to `escalation_id`). A task's budget holds that
    task; a loop's holds the loop; the project's or the day's holds every loop."""

    type: Literal["budget.exhausted"] = "budget.exhausted"
    level: BudgetLevel
    scope: str
    metric: BudgetMetric
    spent: float
    limit: float
    task_id: str | None = None
    escalation_id: str | None = None  # the question to a person (None: one is open)
    producers = (W,)
    consumers = (DASH, HUM)


class BudgetRaised(Event):
    """A person raised a budget (`loops budget LOOP +5usd`, or an answer to the
    escalation). Loops held at that level check their budgets again; the raise itself
    lives in the spend ledger (`bus.spend`), never only in this event."""

    type: Literal["budget.raised"] = "budget.raised"
    level: BudgetLevel
    scope: str
    metric: BudgetMetric
    amount: float
    task_id: str | None = None
    producers = (OP, W)
    consumers = (W, DASH)


class TaskClaimed(Event):
    """The agent says the task is done. A request for verification, never the verdict."""

    type: Literal["task.claimed"] = "task.claimed"
    task_id: str
    attempt: int
    commit: str
    branch: str
    base: str | None = None  # the main commit the branch was based on
    claim: str = ""  # the promise text or marker line
    producers = (W,)
    consumers = (GATE, PM, DASH)


class TaskPassed(Event):
    """The task's verified commit has merged into main. The only 'passed' there is."""

    type: Literal["task.passed"] = "task.passed"
    task_id: str
    attempt: int
    commit: str
    merged_commit: str
    producers = (W,)
    consumers = (PM, MON, HUM, DASH)


class TaskFailed(Event):
    """An attempt failed (verification failed, conflict, agent gave up); the task is retried."""

    type: Literal["task.failed"] = "task.failed"
    task_id: str
    attempt: int
    reason: str
    producers = (W,)
    consumers = (MON, PM, DASH)


class TaskBlocked(Event):
    """A task cannot proceed: max attempts, a blocked dependency, or a question pending."""

    type: Literal["task.blocked"] = "task.blocked"
    task_id: str
    reason: str
    blocked_by: str | None = None  # a dependency's id (loop/TASK for another loop's)
    waiting_on_human: bool = False
    producers = (W,)
    consumers = (MON, PM, HUM, DASH)


class TaskHeld(Event):
    """The PM holds a task (file overlap, priority, or an unmet cross-loop dependency)."""

    type: Literal["task.held"] = "task.held"
    task_id: str
    reason: str
    until_task: str | None = None  # released when this task (loop/TASK) merges
    producers = (PM,)
    consumers = (W, DASH)
    is_command = True


class TaskReleased(Event):
    """The PM releases a held task."""

    type: Literal["task.released"] = "task.released"
    task_id: str
    reason: str
    producers = (PM,)
    consumers = (W, DASH)
    is_command = True


class StateRejected(Event):
    """A hand edit of a state file (test-state.json) was invalid and was ignored."""

    type: Literal["state.rejected"] = "state.rejected"
    path: str
    problems: list[str]
    producers = (W,)
    consumers = (HUM, DASH)


# --------------------------------------------------------------------------- verification and merging


class VerificationStarted(Event):
    """The gate took a claim and started checking it on a clean checkout."""

    type: Literal["verification.started"] = "verification.started"
    task_id: str
    commit: str
    attempt: int
    job_id: str | None = None
    producers = (GATE,)
    consumers = (W, DASH)


class VerificationPassed(Event):
    """Every criterion held on a clean checkout, with the criteria taken from main."""

    type: Literal["verification.passed"] = "verification.passed"
    task_id: str
    commit: str
    attempt: int
    criteria: list[CriterionResult]
    flagged_files: list[str] = Field(default_factory=list)  # tampering approved by a person
    producers = (GATE,)
    consumers = (MERGE, W, PM, DASH)


class VerificationFailed(Event):
    """The claim did not hold (or needs a person); the task goes back to its loop."""

    type: Literal["verification.failed"] = "verification.failed"
    task_id: str
    commit: str
    attempt: int
    verdict: VerificationVerdict
    reason: str
    criteria: list[CriterionResult] = Field(default_factory=list)
    flagged_files: list[str] = Field(default_factory=list)
    escalation_id: str | None = None
    producers = (GATE,)
    consumers = (W, MON, HUM, DASH)


class MergeQueued(Event):
    """A verified commit entered the merge queue."""

    type: Literal["merge.queued"] = "merge.queued"
    task_id: str
    commit: str
    position: int
    producers = (MERGE,)
    consumers = (W, DASH)


class MergeCompleted(Event):
    """Main fast-forwarded to a tree whose checks ran after merging the verified commit."""

    type: Literal["merge.completed"] = "merge.completed"
    task_id: str
    commit: str
    merged_commit: str
    main_before: str
    receipt: Receipt | None = None  # what the task cost (`events.receipts`)
    producers = (MERGE,)
    consumers = (W, PM, DASH)


class MergeConflicted(Event):
    """The verified commit did not land: it does not merge cleanly onto main, its checks
    (reloaded from main) fail once merged, or the merge queue refuses it (`kind`)."""

    type: Literal["merge.conflicted"] = "merge.conflicted"
    task_id: str
    commit: str
    files: list[str]
    tries: int
    reason: str = "conflict"
    kind: MergeRefusal = MergeRefusal.CONFLICT
    escalation_id: str | None = None  # set when a person was asked (after N tries)
    producers = (MERGE,)
    consumers = (W, PM, MON, DASH)


class CheckFlaky(Event):
    """A merge check failed and then passed on the unchanged tree when retried: a flaky
    check (`count` times so far). `blocked`: the queue's flaky policy kept the batch off
    main this time; `escalation_id`: a person was asked to fix the check."""

    type: Literal["check.flaky"] = "check.flaky"
    criterion: str
    command: str
    tree: str  # the commit both runs checked out
    task_ids: list[str] = Field(default_factory=list)  # `loop/TASK-ID` of the batch tested
    count: int
    blocked: bool = False
    output_tail: str = ""  # of the failing run
    escalation_id: str | None = None
    producers = (MERGE,)
    consumers = (MON, DASH)


# --------------------------------------------------------------------------- coordination


class MonitorAction(Event):
    """The monitor acted on an incident (restart, reset with a hint, refine, pause, block)."""

    type: Literal["monitor.action"] = "monitor.action"
    action: MonitorActionKind
    rule: str
    reason: str
    incident_id: str
    task_id: str | None = None
    hint: str | None = None
    producers = (MON,)
    consumers = (W, HUM, DASH)


class ProgressReported(Event):
    """The PM's summary of one loop: passed/total, rate, ETA, tokens and cost."""

    type: Literal["progress.reported"] = "progress.reported"
    passed: int
    total: int
    blocked: int = 0
    rate_per_hour: float | None = None
    eta_s: float | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    producers = (PM,)
    consumers = (DASH, HUM)


class EscalationRaised(Event):
    """A question for a person (raised again with the same id if unacknowledged)."""

    type: Literal["escalation.raised"] = "escalation.raised"
    escalation_id: str
    kind: EscalationKind
    severity: Severity
    question: str
    task_id: str | None = None
    options: list[str] = Field(default_factory=list)
    repeat: int = 0
    reopens: str | None = None  # the id of an answer that could not be read: open again
    producers = (W, GATE, MERGE, MON, PM, HUM)  # the human interface re-raises
    consumers = (HUM, DASH)


class EscalationAcknowledged(Event):
    """A person has seen the escalation (or a notification was delivered to them)."""

    type: Literal["escalation.acknowledged"] = "escalation.acknowledged"
    escalation_id: str
    by: str
    producers = (HUM, OP)
    consumers = (HUM, DASH)


class EscalationAnswered(Event):
    """A person answered: text for the asking loop's next prompt, and/or a decision.
    When a person's free text answers a question with options, the human interface
    publishes it again with the `decision` it read from the text (`interprets` names
    the person's answer): act on the decision, not on the words."""

    type: Literal["escalation.answered"] = "escalation.answered"
    escalation_id: str
    answer: str
    decision: Decision | None = None
    by: str
    task_id: str | None = None
    interprets: str | None = None  # id of the person's answer this decision was read from
    read_by: str | None = None  # how: "rules" or "model:<name>"
    producers = (OP, HUM)
    consumers = (W, GATE, MERGE, MON, HUM, DASH)


class EscalationDelivered(Event):
    """The answer reached the asking loop (it is in that task's next prompt)."""

    type: Literal["escalation.delivered"] = "escalation.delivered"
    escalation_id: str
    task_id: str | None = None
    producers = (W, GATE, MON)
    consumers = (HUM, DASH)


class EscalationExpired(Event):
    """An escalation stopped mattering (its task passed, was reset, or its loop stopped)."""

    type: Literal["escalation.expired"] = "escalation.expired"
    escalation_id: str
    reason: str
    producers = (HUM, W)  # a loop's budget question, once a raise made it moot
    consumers = (DASH,)


# --------------------------------------------------------------------------- commands


class LoopPause(Event):
    """Command: finish the current iteration, then wait until resumed."""

    type: Literal["loop.pause"] = "loop.pause"
    reason: str = ""
    producers = (OP, MON, DASH)
    consumers = (W,)
    is_command = True


class LoopResume(Event):
    """Command: resume a paused loop."""

    type: Literal["loop.resume"] = "loop.resume"
    reason: str = ""
    producers = (OP, MON, DASH)
    consumers = (W,)
    is_command = True


class LoopStop(Event):
    """Command: stop the loop after the current iteration (state is written)."""

    type: Literal["loop.stop"] = "loop.stop"
    reason: str = ""
    restart: bool = False  # the monitor's "restart the worker": stop, then start again
    producers = (OP, MON, DASH)
    consumers = (W,)
    is_command = True


class TaskReset(Event):
    """Command: set a task back to pending with zero attempts, optionally with a hint."""

    type: Literal["task.reset"] = "task.reset"
    task_id: str
    hint: str | None = None
    producers = (OP, MON, DASH)
    consumers = (W,)
    is_command = True


class TaskHint(Event):
    """Command: add guidance to the task's next prompt."""

    type: Literal["task.hint"] = "task.hint"
    task_id: str
    text: str
    producers = (OP, MON, PM, DASH)
    consumers = (W,)
    is_command = True


class IterationAbort(Event):
    """Command: the agent of this run gave no sign of life for too long. Kill its whole
    process group; with `retry`, run the iteration again with `hint` in the prompt.
    Only the run that started at `agent_started_at` is meant; a later run is left alone."""

    type: Literal["iteration.abort"] = "iteration.abort"
    task_id: str
    iteration: int | None = None
    agent_started_at: datetime | None = None
    reason: str
    hint: str | None = None
    retry: bool = True
    incident_id: str | None = None
    producers = (MON, OP)
    consumers = (W,)
    is_command = True


class CommandAcknowledged(Event):
    """A worker acknowledges a command it obeyed (pause, resume, stop, reset, hint, abort)."""

    type: Literal["command.acknowledged"] = "command.acknowledged"
    command: str  # the command's type, e.g. "loop.pause"
    command_id: str
    detail: str = ""
    refused: bool = False  # nothing was done (e.g. a reset of a task the loop does not have)
    producers = (W,)
    consumers = (OP, MON, DASH)


__all__ = [
    "BudgetExhausted",
    "BudgetRaised",
    "BudgetWarned",
    "CheckFlaky",
    "CommandAcknowledged",
    "EscalationAcknowledged",
    "EscalationAnswered",
    "EscalationDelivered",
    "EscalationExpired",
    "EscalationRaised",
    "IterationAbort",
    "IterationFinished",
    "IterationStarted",
    "LoopHeartbeat",
    "LoopPause",
    "LoopResume",
    "LoopStarted",
    "LoopStop",
    "LoopStopped",
    "MergeCompleted",
    "MergeConflicted",
    "MergeQueued",
    "MonitorAction",
    "ProgressReported",
    "StateRejected",
    "TaskBlocked",
    "TaskClaimed",
    "TaskFailed",
    "TaskHeld",
    "TaskHint",
    "TaskPassed",
    "TaskReleased",
    "TaskReset",
    "TaskStarted",
    "UsageLimited",
    "VerificationFailed",
    "VerificationPassed",
    "VerificationStarted",
]
