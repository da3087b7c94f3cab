"""Enums and value objects carried inside events."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator

from events.envelope import Frozen


class LoopStatus(StrEnum):
    """A loop's state, as seen in heartbeats and health.json (seed statuses first)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    PAUSED = "paused"
    WAITING = "waiting"  # waiting out a usage limit, or on a human: not stuck
    IDLE = "idle"  # alive, but no task can be worked on now (all done, blocked or held)


class TaskStatus(StrEnum):
    """Where a task is: the one vocabulary of task states (`loops status`, its JSON,
    the dashboard, the `up`/`run` summaries). test-state.json says four of them, in the
    seed's words: its `FileStatus` is a projection of this (`loops/harness.py`)."""

    PENDING = "pending"
    RUNNING = "running"
    CLAIMED = "claimed"  # the agent says done: waiting for the gate
    VERIFYING = "verifying"
    VERIFIED = "verified"
    QUEUED = "queued"  # in the merge queue
    MERGED = "merged"  # the only "passed" there is (the file's `passed`)
    FAILED = "failed"  # the last attempt failed; the loop retries it
    BLOCKED = "blocked"
    HELD = "held"  # held by the PM

    @property
    def under_way(self) -> bool:
        """A claim the gate or the merge queue has, or the PM's hold: facts of other
        roles that a restarted worker's state file (still pending or failed) does not
        know."""
        return self in _UNDER_WAY


_UNDER_WAY = frozenset(
    {
        TaskStatus.CLAIMED,
        TaskStatus.VERIFYING,
        TaskStatus.VERIFIED,
        TaskStatus.QUEUED,
        TaskStatus.HELD,
    }
)


class IterationOutcome(StrEnum):
    """What one agent run produced."""

    CLAIMED = "claimed"  # the agent says done (<promise>, PASSED): a request for verification
    CONTINUE = "continue"  # no claim: the loop runs another iteration
    BLOCKED = "blocked"  # the agent asks a question (BLOCKED: reason)
    FAILED = "failed"  # the run failed; see FailureKind


class FailureKind(StrEnum):
    """Typed failures of an agent run; each has its own policy in the loop worker."""

    USAGE_LIMIT = "usage_limit"  # wait for the reset; does not count as an iteration
    OUTAGE = "outage"  # API outage or 5xx: back off and retry
    TIMEOUT = "timeout"
    EMPTY_REPLY = "empty_reply"
    AGENT_ERROR = "agent_error"  # the agent crashed or exited non-zero without a reply


class BudgetLevel(StrEnum):
    """What a budget applies to (issue 14)."""

    TASK = "task"
    LOOP = "loop"
    PROJECT = "project"
    DAY = "day"  # the project's rolling 24 hours


class BudgetMetric(StrEnum):
    """What a budget counts: agent calls, tokens, dollars, seconds of wall time."""

    CALLS = "calls"
    TOKENS = "tokens"
    USD = "usd"
    WALL_S = "wall_s"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class EscalationKind(StrEnum):
    QUESTION = "question"  # an agent said BLOCKED with a question
    APPROVAL = "approval"  # a flagged change (tampered checks, refined task) needs a yes/no
    SIGNOFF = "signoff"  # a natural check with no model configured to judge it
    INCIDENT = "incident"  # the monitor gave up, or mass death
    BUDGET = "budget"  # a budget is spent: raise it (+5usd), skip the task, or stop the loop


class Decision(StrEnum):
    """An answer applied as a decision rather than text for the next prompt."""

    RETRY = "retry"
    SKIP = "skip"
    APPROVE = "approve"
    REJECT = "reject"
    ABORT = "abort"


class MonitorActionKind(StrEnum):
    RESTART_WORKER = "restart_worker"
    RESET_TASK = "reset_task"
    REFINE_TASK = "refine_task"
    PAUSE_LOOP = "pause_loop"
    BLOCK_TASK = "block_task"
    ESCALATE = "escalate"
    ABORT_ITERATION = "abort_iteration"  # kill a silent agent's process group, retry


class AgentSign(StrEnum):
    """A running agent's last sign of life, as its heartbeat reports it."""

    STARTED = "started"  # the run began; nothing since
    OUTPUT = "output"  # a line on stdout/stderr, or a stream-json event
    TOOL_CALL = "tool_call"  # the agent called a tool
    FILE_CHANGE = "file_change"  # a file changed in the workspace


class MergeRefusal(StrEnum):
    """Why the merge queue did not land a verified commit (`merge.conflicted` `kind`)."""

    CONFLICT = "conflict"  # git could not merge it onto main (files listed)
    CHECKS_FAILED = "checks_failed"  # a check or the test command failed on the merged tree
    UNKNOWN_TASK = "unknown_task"  # main's spec does not know the task (and no default check)
    TAMPERED = "tampered"  # it changes protected files no person approved
    MISSING_COMMIT = "missing_commit"  # the verified commit is not in the repository
    BLOCKED = "blocked"  # a person's uncommitted files are in the way of main


class VerificationVerdict(StrEnum):
    """Why a verification failed (or `passed`)."""

    PASSED = "passed"
    CHECKS_FAILED = "checks_failed"
    TAMPERED = "tampered"  # the claim edits its own checks/spec; policy said reject
    BAD_CLAIM = "bad_claim"  # unknown commit or task, malformed claim
    NEEDS_HUMAN = "needs_human"  # natural checks with no judge, or tamper awaiting approval


class ScriptCheck(Frozen):
    """Passes when the shell command exits 0 (SPEC.yaml `check: {type: script, run: ...}`)."""

    type: Literal["script"] = "script"
    run: str = Field(min_length=1)
    timeout_s: float | None = None


class NaturalCheck(Frozen):
    """Judged by a model (or a person) from a natural-language description."""

    type: Literal["natural"] = "natural"
    description: str = Field(min_length=1)


Check = Annotated[ScriptCheck | NaturalCheck, Field(discriminator="type")]


class Criterion(Frozen):
    """One acceptance criterion: what must be true, and how it is checked."""

    criterion: str = Field(min_length=1)
    check: Check


LAST_RESULT_CHARS = 500


class TaskSnapshot(Frozen):
    """One task as a worker's state file has it when the worker starts (`loop.started`,
    after it set back every `passed` that no merge backs) or stops (`loop.stopped`):
    the read model's list of a loop's tasks, with what no event of this run may say
    again (a task merged or blocked in an earlier run, one added by hand)."""

    id: str
    status: TaskStatus
    attempts: int = 0  # failed attempts, as test-state.json counts them
    last_result: str | None = None  # cut to LAST_RESULT_CHARS: a long list stays small

    @field_validator("last_result")
    @classmethod
    def _cut(cls, text: str | None) -> str | None:
        if text is None or len(text) <= LAST_RESULT_CHARS:
            return text
        return text[: LAST_RESULT_CHARS - 1] + "…"


class TokenUsage(Frozen):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


class DiffStat(Frozen):
    files: int = 0
    insertions: int = 0
    deletions: int = 0


class CriterionResult(Frozen):
    """Evidence for one criterion, as the gate saw it."""

    criterion: str
    kind: Literal["script", "natural"]
    passed: bool | None  # None: not judged (needs a person)
    command: str | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    output_tail: str = ""
    judged_by: str | None = None  # "script", a model name, or "human"
