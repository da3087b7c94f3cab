"""What the worker does when an agent run goes wrong in a way that is not the task's:
the monitor aborted a silent run, the agent cannot start at all, it crashed the same
way again and again, or its account is inside a usage window (issue 11; the contracts
are in `agents/README.md`). Functions of the worker, kept apart from the iteration."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from events import (
    EscalationKind,
    IterationAbort,
    LoopStatus,
    Severity,
    TaskBlocked,
    UsageLimited,
    short_id,
)
from loops.book import FileStatus, TaskDef
from loops.liveness import AgentRun
from loops.runtime import Phase, TaskRuntime

if TYPE_CHECKING:
    from loops.worker import LoopWorker

log = logging.getLogger("loops.worker")

CRASH_STREAK = 3  # the same agent crash this many times in a row holds the loop


def aborted_by_monitor(
    w: LoopWorker, rt: TaskRuntime, command: IterationAbort, run: AgentRun
) -> None:
    killed = f"killed process group {run.pid}" if run.pid else "killed the agent"
    w.state.aborted[command.id] = killed
    for old in list(w.state.aborted)[:-100]:
        del w.state.aborted[old]
    if command.hint:
        rt.guidance.append(command.hint)
    w.retry_now = command.retry  # the retry runs at once, without auto_continue_delay
    log.warning(
        "the monitor aborted %s (iteration %d): %s; %s",
        command.task_id,
        run.iteration,
        command.reason,
        "retrying with its hint" if command.retry else "not retrying",
    )
    if not command.retry:
        # Not run again on our own: the monitor's block_task follows, and a person's
        # answer resets the task.
        rt.hold()


def cannot_start(w: LoopWorker, task_id: str, rt: TaskRuntime, detail: str) -> None:
    """The agent cannot start at all: one line for the operator, the task blocked with
    the reason, and no more agent calls from this loop (a restart tries again)."""
    w.broken_agent = detail
    log.error("The agent cannot run: %s", detail)
    reason = f"the agent cannot start: {detail}"
    rt.block()
    rt.agent_broken = True
    w.book.update(task_id, status=FileStatus.BLOCKED, last_result=reason)
    w.save()
    w.emit(TaskBlocked, task_id, reason=reason)
    w.block_dependents()


def retry_after_broken_agent(w: LoopWorker) -> None:
    """A new run (the agent may be fixed): tasks `cannot_start` blocked are pending
    again, with their attempts, and so are the dependents they blocked. The printed
    "fix the command ... and run again" then works as it says."""
    from loops.reactions import unblock_dependents

    for task_id, rt in w.state.tasks.items():
        if not rt.agent_broken:
            continue
        rt.agent_broken = False
        if w.book.record(task_id).status is FileStatus.BLOCKED:
            log.info("%s: the agent could not start last time; trying again", task_id)
            w.book.update(task_id, status=FileStatus.PENDING, last_result="agent fixed? retrying")
            unblock_dependents(w, task_id)
    w.save()


def crash_hold(w: LoopWorker, task: TaskDef, rt: TaskRuntime, detail: str) -> None:
    """The agent crashed the same way CRASH_STREAK times in a row: hold the loop and
    ask a person, without costing the task an attempt."""
    w.state.crashes = []
    question = (
        f"The agent ({w.runner.name}) crashed {CRASH_STREAK} times in a row on "
        f"{task.id} with: {detail}. Fix the agent, then answer (your answer goes into "
        f"its next prompt) or run `loops resume {w.loop}`."
    )
    escalation_id = short_id("e")
    rt.ask(escalation_id, question)
    w.state.crash_hold = escalation_id
    w.save()
    w.wait_on_person(
        task.id, escalation_id, question, kind=EscalationKind.INCIDENT, severity=Severity.HIGH
    )
    log.error(
        "Paused: the agent crashed %d times in a row: %s (answer with `loops answer %s ...` "
        "or `loops resume %s`)",
        CRASH_STREAK,
        detail,
        rt.escalation_id,
        w.loop,
    )


def release_crash_hold(w: LoopWorker) -> bool:
    """A person answered or resumed: the held task works again. False if none held."""
    held, w.state.crash_hold = w.state.crash_hold, None
    if held is None:
        return False
    for rt in w.state.tasks.values():
        if rt.escalation_id == held and rt.phase is Phase.WAITING_HUMAN:
            rt.answered()
            rt.question = None
    return True


def usage_window(w: LoopWorker) -> datetime | None:
    """When this loop's account may be called again, if a usage window is open now
    (another loop may have hit the limit): no agent call until then."""
    if w.usage is None or w.account is None:
        return None
    until = w.usage.until(w.account, now=w.clock())
    if until is None:
        return None
    w.state.waiting_until = until
    w.status = LoopStatus.WAITING
    if w.announced_window != until:
        w.announced_window = until
        log.warning(
            "waiting for usage reset at %s (account shared with other loops)",
            until.astimezone().strftime("%H:%M"),
        )
    return until


def record_usage_limit(
    w: LoopWorker, until: datetime, *, estimated: bool, task_id: str, iteration: int
) -> datetime:
    """Record the account's usage window (a later reset wins); publish `usage.limited`
    when it is a new window. Returns the account's reset time."""
    if w.usage is None or w.account is None:
        return until
    now = w.clock()
    before = w.usage.until(w.account, now=now)
    until = w.usage.record(w.account, until, now=now)
    if before is None or until > before:
        w.emit(
            UsageLimited,
            task_id,
            account=w.account,
            runner=w.account.partition(":")[0],
            reset_at=until,
            estimated=estimated,
            iteration=iteration,
        )
    w.announced_window = until
    return until


def note_crash(w: LoopWorker, crashed: bool, detail: str | None) -> bool:
    """Count the agent's crashes in a row; True when the last CRASH_STREAK were the
    same crash (the loop then holds and asks a person, `crash_hold`)."""
    w.state.crashes = [*w.state.crashes, detail or "?"] if crashed else []
    del w.state.crashes[:-CRASH_STREAK]
    return len(w.state.crashes) == CRASH_STREAK and len(set(w.state.crashes)) == 1
