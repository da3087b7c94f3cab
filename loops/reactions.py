"""How a loop worker reacts to the bus: verdicts, merges, answers, and commands.

Every reaction is idempotent (events are delivered at least once) and persisted
before it is acknowledged.
"""

from __future__ import annotations

import logging

from events import (
    BudgetRaised,
    CommandAcknowledged,
    CriterionResult,
    Decision,
    EscalationAnswered,
    Event,
    IterationAbort,
    LoopPause,
    LoopResume,
    LoopStop,
    MergeCompleted,
    MergeConflicted,
    MonitorAction,
    MonitorActionKind,
    StateRejected,
    TaskBlocked,
    TaskHeld,
    TaskHint,
    TaskPassed,
    TaskReleased,
    TaskReset,
    VerificationFailed,
    VerificationPassed,
    VerificationVerdict,
    derived_id,
)
from loops import budget as budgets
from loops.agent_failures import release_crash_hold
from loops.book import TaskStatus
from loops.runtime import Phase, TaskRuntime
from loops.worker import LoopWorker

log = logging.getLogger("loops.worker")

FAILURE_OUTPUT_CAP = 6000


def failure_report(criteria: list[CriterionResult], reason: str) -> str:
    """The failing criteria's evidence, for the next prompt."""
    lines = [reason]
    for c in criteria:
        if c.passed:
            continue
        head = f"✗ {c.criterion}"
        if c.command:
            head += f" — `{c.command}` exit {c.exit_code}" + (" (timed out)" if c.timed_out else "")
        lines.append(head)
        if c.output_tail.strip():
            lines.append(c.output_tail.strip()[-FAILURE_OUTPUT_CAP:])
    return "\n".join(lines)


# What a worker reacts to; its subscription asks for these types only.
WORKER_TYPES = frozenset({
    "task.passed", "loop.pause", "loop.resume", "loop.stop", "task.reset", "task.hint",
    "task.held", "task.released", "verification.passed", "verification.failed",
    "merge.completed", "merge.conflicted", "escalation.answered", "monitor.action",
    "iteration.abort", "budget.raised",
})  # fmt: skip


def _relevant(w: LoopWorker, event: Event) -> bool:
    if isinstance(event, TaskPassed):
        return event.loop is not None and event.loop != w.loop
    if isinstance(event, EscalationAnswered):
        return any(rt.escalation_id == event.escalation_id for rt in w.state.tasks.values())
    if isinstance(event, BudgetRaised):  # a project's or the day's raise concerns every loop
        return event.loop in (None, w.loop)
    if isinstance(event, MonitorAction):
        return event.loop == w.loop and event.action is MonitorActionKind.BLOCK_TASK
    return event.loop == w.loop and event.type in WORKER_TYPES


def handle(w: LoopWorker, event: Event) -> None:
    """React to one event from the bus. The reaction's state, the event's handled mark
    and the events it decided (the outbox) are saved in one write; then the outbox is
    published. Only when that succeeded does this return (and the bus ack the entry):
    a publish that fails raises, the entry is delivered again, and its redelivery
    publishes what the outbox still holds, without reacting twice."""
    if not _relevant(w, event):
        return
    if not w.state.seen(event.id):
        with w.deferring():
            _react(w, event)
            w.state.mark(event.id)
            w.save()
    # Not saved again here: should the process die before the next save, its restart
    # publishes these events once more, with the same ids, and consumers drop them.
    w.flush()


def _react(w: LoopWorker, event: Event) -> None:
    if isinstance(event, TaskPassed):
        w.state.external_passed.add(f"{event.loop}/{event.task_id}")
    elif isinstance(event, LoopPause | LoopResume | LoopStop | TaskReset | TaskHint):
        _command(w, event)
    elif isinstance(event, TaskHeld | TaskReleased):
        w.state.task(event.task_id).held = event.reason if isinstance(event, TaskHeld) else None
    elif isinstance(
        event, VerificationPassed | VerificationFailed | MergeCompleted | MergeConflicted
    ):
        _verdict(w, event)
    elif isinstance(event, EscalationAnswered):
        _answer(w, event)
    elif isinstance(event, IterationAbort):
        _abort(w, event)
    elif isinstance(event, BudgetRaised):
        budgets.raised(w, event)
    elif isinstance(event, MonitorAction) and event.task_id:
        _block(w, event.task_id, f"blocked by the monitor: {event.reason}")


def _current_claim(
    w: LoopWorker, task_id: str, commit: str, *, done_too: bool = False
) -> TaskRuntime | None:
    rt = w.state.tasks.get(task_id)
    if rt is None or rt.claim_commit != commit or (rt.phase is Phase.DONE and not done_too):
        return None  # a stale verdict for an earlier claim (or a duplicate): ignore it
    return rt


def _verdict(
    w: LoopWorker, event: VerificationPassed | VerificationFailed | MergeCompleted | MergeConflicted
) -> None:
    merged = isinstance(event, MergeCompleted)
    rt = _current_claim(w, event.task_id, event.commit, done_too=merged)
    if rt is None:
        return
    if isinstance(event, VerificationPassed):
        rt.verified()
    elif isinstance(event, VerificationFailed):
        if event.verdict is VerificationVerdict.NEEDS_HUMAN:
            rt.wait_on_person(event.escalation_id)  # the gate's next verdict resolves it
            return
        rt.last_failure = failure_report(event.criteria, f"Verification failed: {event.reason}")
        rt.history.append(f"verification of {event.commit[:10]} failed: {event.reason}")
        log.warning("verification of %s failed: %s", event.task_id, event.reason)
        for c in event.criteria:
            if c.passed is False:
                lines = [ln for ln in c.output_tail.strip().splitlines() if ln.strip()]
                log.warning("  ✗ %s%s", c.criterion, f": {lines[-1][-300:]}" if lines else "")
        w.fail_attempt(event.task_id, f"verification failed: {event.reason}")
    elif isinstance(event, MergeCompleted):
        _merged(w, rt, event)
    else:
        rt.conflict_tries = event.tries
        rt.conflict_files = list(event.files)
        rt.history.append(
            f"merge into main conflicted in {', '.join(event.files) or '?'} ({event.reason})"
        )
        log.warning("merge of %s failed (try %d): %s", event.task_id, event.tries, event.reason)
        if event.escalation_id:
            # The merge queue asked a person: wait for the answer, then try again.
            rt.wait_on_person(event.escalation_id, resume=Phase.CONFLICT)
        else:
            rt.conflicted()


def _merged(w: LoopWorker, rt: TaskRuntime, event: MergeCompleted) -> None:
    """The durable record first (what dependents and summaries trust), then the state
    file, then `task.passed`, whose id derives from the merge: taking the same merge
    in again (after a crash or a lost publish) publishes nothing new."""
    record = w.book.record(event.task_id)
    w.merged.record(event.task_id, event.merged_commit)
    rt.merged()
    w.book.update(
        event.task_id,
        status=TaskStatus.PASSED,
        last_result=f"merged as {event.merged_commit[:12]}",
    )
    w.emit(
        TaskPassed,
        event.task_id,
        id=derived_id(event.id, "task.passed"),
        attempt=record.attempts + 1,
        commit=event.commit,
        merged_commit=event.merged_commit,
    )
    log.info("Task %s verified and merged (%s).", event.task_id, event.merged_commit[:12])


def _answer(w: LoopWorker, event: EscalationAnswered) -> None:
    if budgets.answered(w, event):
        return  # a raise, `skip` or `stop` for a spent budget (loops/budget.py)
    for task_id, rt in w.state.tasks.items():
        if rt.escalation_id != event.escalation_id or rt.phase is not Phase.WAITING_HUMAN:
            continue
        if rt.question is None:
            # Another role's question. The gate answers with a new verdict; after the
            # merge queue's, the loop itself tries the merge again (or skips, or stops).
            # An answer without a decision changes nothing: the human interface reads
            # one from its text (a follow-up answer) or asks again.
            if rt.resume is not None and event.decision is not None:
                ended = _skip_or_abort(w, task_id, event.decision)
                if not ended and event.decision in (Decision.RETRY, Decision.APPROVE):
                    rt.resume_after_answer()
            return
        if event.answer.strip():
            rt.guidance.append(
                f"A person answered your question \u201c{rt.question}\u201d: {event.answer.strip()}"
            )
        rt.undelivered.append(event.escalation_id)
        if w.state.crash_hold == event.escalation_id:
            w.state.crash_hold = None  # the person fixed the agent (or says go on)
        if not _skip_or_abort(w, task_id, event.decision):
            rt.answered()
        return


def _skip_or_abort(w: LoopWorker, task_id: str, decision: Decision | None) -> bool:
    """A person's `skip` (the task is blocked) or `abort` (the loop stops), the answer's
    escalation then closed; False, and nothing done, for any other decision."""
    if decision is Decision.SKIP:
        w.state.task(task_id).escalation_id = None
        _block(w, task_id, "skipped by a person")
    elif decision is Decision.ABORT:
        w.state.task(task_id).escalation_id = None
        w.stop_requested = "aborted by a person"
    else:
        return False
    return True


def _block(w: LoopWorker, task_id: str, reason: str) -> None:
    w.state.task(task_id).block()
    w.book.update(task_id, status=TaskStatus.BLOCKED, last_result=reason)
    w.save()
    w.emit(TaskBlocked, task_id, reason=reason)
    w.block_dependents()


def _command(
    w: LoopWorker, event: LoopPause | LoopResume | LoopStop | TaskReset | TaskHint
) -> None:
    detail, refused = "", False
    if isinstance(event, LoopPause):
        w.state.paused = True
        detail = "paused after the current iteration"
    elif isinstance(event, LoopResume):
        w.state.paused = False
        detail = "resumed"
        if release_crash_hold(w):
            detail = "resumed after the agent's crashes"
        if budgets.resumed(w):
            detail = "resumed; budgets are checked again before the next call"
    elif isinstance(event, LoopStop):
        w.stop_requested = event.reason or "stopped by command"
        w.restart_requested = event.restart
        detail = "restarting" if event.restart else "stopping after the current iteration"
    elif isinstance(event, TaskReset):
        if not _known(w, event.task_id):
            detail, refused = f"unknown task {event.task_id}", True
        else:
            old = w.state.task(event.task_id)
            # A fresh attempt, but what was tried (and told) so far stays in the prompt.
            fresh = TaskRuntime(
                guidance=old.guidance + ([event.hint] if event.hint else []),
                history=old.history,
                iterations=old.iterations,
                session_id=old.session_id,
            )
            w.state.tasks[event.task_id] = fresh
            w.book.update(event.task_id, status=TaskStatus.PENDING, attempts=0, last_result="reset")
            unblock_dependents(w, event.task_id)
            detail = f"{event.task_id} reset to pending" + (" with a hint" if event.hint else "")
    else:
        if not _known(w, event.task_id):
            detail, refused = f"unknown task {event.task_id}", True
        else:
            w.state.task(event.task_id).guidance.append(event.text)
            detail = f"hint added to {event.task_id}"
    w.save()
    w.emit(
        CommandAcknowledged,
        id=derived_id(event.id, "ack"),
        command=event.type,
        command_id=event.id,
        detail=detail,
        refused=refused,
        causation_id=event.id,
    )


def _abort(w: LoopWorker, event: IterationAbort) -> None:
    """The run was killed while it ran (`loops.liveness.RunWatch`) and recorded; here
    the command is acknowledged. A command for no running agent (a run that already
    ended, or another run) changes nothing."""
    killed = w.state.aborted.get(event.id)
    w.emit(
        CommandAcknowledged,
        id=derived_id(event.id, "ack"),
        command=event.type,
        command_id=event.id,
        detail=killed or "not running",
        causation_id=event.id,
    )


def _known(w: LoopWorker, task_id: str) -> bool:
    return any(t.id == task_id for t in w.book.tasks())


def unblock_dependents(w: LoopWorker, task_id: str) -> None:
    for task in w.book.tasks():
        rt = w.state.tasks.get(task.id)
        blocked = w.book.record(task.id).status is TaskStatus.BLOCKED
        if blocked and rt is not None and rt.blocked_by == task_id:
            rt.blocked_by = None
            w.book.update(task.id, status=TaskStatus.PENDING, last_result="dependency reset")
            unblock_dependents(w, task.id)


def reload_book(w: LoopWorker, last_problems: list[str]) -> list[str]:
    """Take up hand edits of the state file; report an invalid edit once. A valid
    edit is taken up (reset a task to pending, add a task, block one), except a
    `passed` that no merge on main backs: that is set back and reported."""
    before = w.book.statuses()
    problems = w.book.reload()
    if problems and problems != last_problems:
        log.error("ignored an invalid edit: %s", problems[0])
        w.emit(StateRejected, path=str(w.book.state_path), problems=problems)
    if not problems:
        forged = w.reject_unmerged_passes(before)
        if forged:
            w.emit(StateRejected, path=str(w.book.state_path), problems=forged)
    return problems
