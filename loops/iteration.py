"""What one agent run amounts to: `assess` reads the runner's result (and how the run
ended: on its own, killed by the monitor's abort, or stopped by the operator) into a
`Step`, the one record the worker publishes and acts on. Pure: no git, no bus."""

from __future__ import annotations

from dataclasses import dataclass, replace

from events import FailureKind, IterationAbort, IterationOutcome
from loops.liveness import AgentRun
from loops.runners import INTERRUPTED_DETAIL, AgentResult
from loops.runners.outcome import ReplyOutcome, parse_outcome

WAITS = (FailureKind.USAGE_LIMIT, FailureKind.OUTAGE)  # waited out, never counted


@dataclass(frozen=True)
class Step:
    """One agent run, assessed."""

    result: AgentResult  # redacted; `failure_detail` says why an abort or stop ended it
    kind: IterationOutcome
    outcome: ReplyOutcome | None  # what the reply said (None: no reply to read)
    failure: FailureKind | None
    aborted: IterationAbort | None  # the monitor's command that killed the run
    interrupted: bool  # stopped by the operator (Ctrl-C, shutdown): not the agent's failure
    counted: bool  # an iteration toward the attempt's and the loop's limits
    crashed: bool  # the agent itself failed (toward the crash streak)

    @property
    def waits(self) -> bool:
        """A usage limit or an outage: the loop waits, then runs it again."""
        return self.failure in WAITS and not self.interrupted


def assess(result: AgentResult, run: AgentRun, *, cancelled: bool) -> Step:
    """The run's `Step`. `result` is redacted already (`loops.jobs.run_in_workspace`,
    which every run passes). `cancelled`: the loop's own stop was set when it ended."""
    # The monitor's abort, if it killed the run (an agent that ended on its own just
    # before keeps its result; the command is then acknowledged as "not running").
    aborted = run.abort if result.failure_detail == INTERRUPTED_DETAIL else None
    interrupted = aborted is None and cancelled
    outcome = parse_outcome(result.reply) if result.ok and not interrupted else None
    kind = outcome.kind if outcome else IterationOutcome.FAILED
    failure = result.failure
    if outcome and outcome.kind is IterationOutcome.FAILED and failure is None:
        failure = FailureKind.EMPTY_REPLY
    if aborted is not None:
        # Killed by the monitor for a silent agent: an agent call (it counts toward -n),
        # but not the task's failed attempt; the command's hint goes in the next prompt.
        failure = FailureKind.TIMEOUT
        result = replace(result, failure_detail=f"aborted by the monitor: {aborted.reason}")
    elif interrupted:
        # The work so far is committed; the iteration runs again on restart.
        failure = FailureKind.AGENT_ERROR
        result = replace(result, failure_detail=INTERRUPTED_DETAIL)
    unrunnable = result.unrunnable
    return Step(
        result=result,
        kind=kind,
        outcome=outcome,
        failure=failure,
        aborted=aborted,
        interrupted=interrupted,
        counted=not interrupted and not unrunnable and failure not in WAITS,
        crashed=failure is FailureKind.AGENT_ERROR
        and aborted is None
        and not interrupted
        and not unrunnable,
    )


def history_line(n: int, step: Step, changed: list[str]) -> str:
    """One line of the task's history, for the next prompt."""
    what = f"failed ({step.failure.value})" if step.failure else step.kind.value
    files = (
        ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        if changed
        else "no files changed"
    )
    tail = " ".join(step.result.reply.strip().split())[-160:]
    return f"iteration {n}: {what}; {files}; reply ended: {tail!r}"
