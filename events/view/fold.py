"""How each event changes the view. One small function per event type; `HANDLERS`
maps the event class to it. Unknown types change nothing but the recent feed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import events as ev
from events import TaskStatus
from events.view import escalations
from events.view.models import (
    COMMANDS,
    MONITOR_ACTIONS,
    RECENT_EVENTS,
    CommandView,
    Counts,
    FlakyCheckView,
    LoopView,
    MergeEntry,
    MergeStatus,
    MonitorActionView,
    TaskView,
    Verification,
)

if TYPE_CHECKING:
    from events.view.system import SystemView


def _loop_started(view: SystemView, e: ev.LoopStarted) -> None:
    loop = view.loop(e.loop)
    loop.status = ev.LoopStatus.STARTING
    loop.agent, loop.host, loop.pid = e.agent, e.host, e.pid
    loop.total, loop.passed = e.tasks_total, e.tasks_passed
    loop.sandbox_warning = e.sandbox_warning
    loop.last_seen = loop.started = e.ts
    loop.stopped_reason = None
    loop.can_progress, loop.paused = None, False
    loop.max_attempts = e.max_attempts or loop.max_attempts
    if e.tasks is not None:
        _take_snapshot(loop, e.tasks)


def _take_snapshot(loop: LoopView, tasks: list[ev.TaskSnapshot]) -> None:
    """The worker's task list (as it starts or stops) replaces the view's: tasks gone
    from its file go, tasks added by hand come, and each status is the file's, unless
    the events know more that the file cannot say (a claim under way with the gate or
    merge queue, a hold)."""
    known, loop.tasks, loop.listed = loop.tasks, {}, True
    for snap in tasks:
        task = loop.tasks[snap.id] = known.get(snap.id) or TaskView(loop=loop.name, task_id=snap.id)
        settled = snap.status in (TaskStatus.MERGED, TaskStatus.BLOCKED)
        if settled or not task.status.under_way:
            task.status, task.reason = snap.status, snap.last_result or ""
        task.attempts = snap.attempts


def _heartbeat(view: SystemView, e: ev.LoopHeartbeat) -> None:
    loop = view.loop(e.loop)
    loop.status = e.status
    loop.host, loop.pid, loop.interval_s = e.host, e.pid, e.interval_s
    loop.task_id, loop.iteration, loop.waiting_until = e.task_id, e.iteration, e.waiting_until
    loop.passed, loop.total = e.passed, e.total
    loop.can_progress, loop.paused = e.can_progress, e.paused
    loop.last_seen = e.ts


def _loop_stopped(view: SystemView, e: ev.LoopStopped) -> None:
    loop = view.loop(e.loop)
    loop.status = e.status
    loop.stopped_reason = e.reason
    loop.last_seen = e.ts
    if e.tasks is not None:
        _take_snapshot(loop, e.tasks)


def _failed(attempt: int) -> int:
    """`attempts` means failed attempts everywhere (as in test-state.json): the events
    carry the number of the attempt in progress, one more than the failed ones."""
    return max(attempt - 1, 0)


def _task_started(view: SystemView, e: ev.TaskStarted) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts, task.reason = TaskStatus.RUNNING, _failed(e.attempt), ""
    loop = view.loop(e.loop)
    loop.task_id = e.task_id
    if loop.status in (ev.LoopStatus.STARTING, ev.LoopStatus.STOPPED):
        loop.status = ev.LoopStatus.RUNNING


def _iteration_started(view: SystemView, e: ev.IterationStarted) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts = TaskStatus.RUNNING, _failed(e.attempt)
    task.iterations = max(task.iterations, e.iteration)
    loop = view.loop(e.loop)
    loop.task_id, loop.iteration, loop.agent = e.task_id, e.iteration, e.agent


def _iteration_finished(view: SystemView, e: ev.IterationFinished) -> None:
    task = view._task(e, e.task_id)
    task.iterations = max(task.iterations, e.iteration)
    loop = view.loop(e.loop)
    loop.iteration = max(loop.iteration or 0, e.iteration)
    if e.failure is ev.FailureKind.OUTAGE:
        loop.outage_until = e.retry_at
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
    Counts.bump(view.counts.iterations, e.loop, e.outcome.value)
    loop.mark(e.ts, "failed" if e.outcome is ev.IterationOutcome.FAILED else "iteration")
    if e.failure is not None:
        Counts.bump(view.counts.failures, e.loop, e.failure.value)


def _claimed(view: SystemView, e: ev.TaskClaimed) -> None:
    task = view._task(e, e.task_id)
    task.status, task.attempts, task.commit = TaskStatus.CLAIMED, _failed(e.attempt), e.commit
    task.claimed_at = e.ts


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
    Counts.bump(view.counts.verifications, e.loop, ev.VerificationVerdict.PASSED.value)
    view.loop(e.loop).mark(e.ts, "verified")


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
    task.claimed_at = None
    Counts.bump(view.counts.verifications, e.loop, e.verdict.value)
    view.loop(e.loop).mark(e.ts, "rejected")


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
    if entry.status is MergeStatus.MERGED and task.claimed_at is not None:
        view.counts.claim_to_merge.observe(max((e.ts - task.claimed_at).total_seconds(), 0.0))
        task.claimed_at = None
    Counts.bump(view.counts.merges, e.loop, MergeStatus.MERGED.value)
    view.loop(e.loop).mark(e.ts, "merged")


def _merge_conflicted(view: SystemView, e: ev.MergeConflicted) -> None:
    entry = _merge_done(view, e, e.task_id, e.commit, MergeStatus.CONFLICTED)
    entry.files, entry.reason = list(e.files), e.reason
    task = view._task(e, e.task_id)
    task.status = TaskStatus.FAILED
    task.reason = f"merge {e.reason}: {', '.join(e.files)}".rstrip(": ")
    task.claimed_at = None
    Counts.bump(view.counts.merges, e.loop, MergeStatus.CONFLICTED.value)
    view.loop(e.loop).mark(e.ts, "conflicted")


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
    task.attempts = _failed(e.attempt)
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
    Counts.bump(view.counts.monitor_actions, e.loop, e.action.value)


def _check_flaky(view: SystemView, e: ev.CheckFlaky) -> None:
    flaky = view.flaky.get(e.command)
    if flaky is None:
        flaky = view.flaky[e.command] = FlakyCheckView(
            command=e.command, criterion=e.criterion, ts=e.ts
        )
    flaky.seen += 1
    flaky.count, flaky.blocked, flaky.task_ids, flaky.ts = e.count, e.blocked, e.task_ids, e.ts
    flaky.escalation_id = e.escalation_id or flaky.escalation_id


def _progress(view: SystemView, e: ev.ProgressReported) -> None:
    loop = view.loop(e.loop)
    loop.passed, loop.total = e.passed, e.total
    loop.rate_per_hour, loop.eta_s = e.rate_per_hour, e.eta_s


def _escalation(
    view: SystemView,
    e: ev.EscalationRaised
    | ev.EscalationAcknowledged
    | ev.EscalationAnswered
    | ev.EscalationDelivered
    | ev.EscalationExpired,
) -> None:
    """The same `apply` the human-interface agent folds: one vocabulary, one logic."""
    current = view.escalation_records.get(e.escalation_id)
    record = escalations.apply(current, e)
    if record is None:
        return
    if current is None:
        Counts.bump(view.counts.escalations, e.loop, record.kind.value)
    view.escalation_records[e.escalation_id] = record
    view.escalation(e.escalation_id).sync(record)


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
    if command.loop is None or e.refused:  # nothing changed (a reset of an unknown task)
        return
    loop = view.loop(command.loop)
    kind = ev.EVENT_TYPES.get(command.type)
    if kind is ev.LoopPause:
        loop.status = ev.LoopStatus.PAUSED
    elif kind is ev.LoopResume and loop.status is ev.LoopStatus.PAUSED:
        loop.status = ev.LoopStatus.RUNNING
    elif kind is ev.TaskReset and command.task_id is not None:
        task = loop.task(command.task_id)
        task.status, task.attempts, task.reason, task.updated = TaskStatus.PENDING, 0, "", e.ts


def _budget(view: SystemView, e: ev.BudgetWarned | ev.BudgetExhausted | ev.BudgetRaised) -> None:
    if e.loop is None:
        return
    loop = view.loop(e.loop)
    if isinstance(e, ev.BudgetRaised):
        loop.budget = None
        return
    what = "warning" if isinstance(e, ev.BudgetWarned) else "spent, paused"
    figure = (
        f"${e.spent:.2f} of ${e.limit:.2f}"
        if e.metric is ev.BudgetMetric.USD
        else (f"{e.spent:g} of {e.limit:g} {e.metric.value}")
    )
    loop.budget = f"{e.level.value} budget {what}: {figure}"


HANDLERS: dict[type[ev.Event], Callable[[SystemView, Any], None]] = {
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
    ev.CheckFlaky: _check_flaky,
    ev.ProgressReported: _progress,
    ev.EscalationRaised: _escalation,
    ev.EscalationAcknowledged: _escalation,
    ev.EscalationAnswered: _escalation,
    ev.EscalationDelivered: _escalation,
    ev.EscalationExpired: _escalation,
    ev.LoopPause: _command,
    ev.LoopResume: _command,
    ev.LoopStop: _command,
    ev.TaskReset: _command,
    ev.TaskHint: _command,
    ev.CommandAcknowledged: _acknowledged,
    ev.BudgetWarned: _budget,
    ev.BudgetExhausted: _budget,
    ev.BudgetRaised: _budget,
}
