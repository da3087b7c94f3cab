"""The loop worker: the Ralph loop, done properly.

It picks the next open task whose dependencies have merged, runs the agent in the
loop's own worktree, commits each iteration, and publishes what happened. An agent's
"done" becomes a `task.claimed`; the task passes only on the `merge.completed` that
follows verification. Bus events (verdicts, merges, answers, commands) are handled in
`loops/reactions.py`; this module runs iterations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bus import PassedLedger
from bus.usage import UsageWindows
from events import (
    DecodeError,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    FailureKind,
    IterationFinished,
    IterationOutcome,
    IterationStarted,
    LoopHeartbeat,
    LoopStarted,
    LoopStatus,
    LoopStopped,
    ModelPrice,
    Role,
    Severity,
    Source,
    StateRejected,
    TaskBlocked,
    TaskClaimed,
    TaskFailed,
    TaskStarted,
    decode_json,
    new_id,
    short_id,
)
from loops import budget as budgets
from loops.agent_failures import (
    CRASH_STREAK,
    aborted_by_monitor,
    cannot_start,
    crash_hold,
    record_usage_limit,
    retry_after_broken_agent,
    usage_window,
)
from loops.book import TaskBook, TaskDef, TaskStatus
from loops.budget import BudgetGuard
from loops.cost import Pricer
from loops.liveness import AbortFeed, AgentRun, RunWatch
from loops.merged import MergedTasks
from loops.prompt import PromptInput, build_prompt
from loops.runners import (
    DEFAULT_TIMEOUT_S,
    INTERRUPTED_DETAIL,
    AgentRequest,
    AgentResult,
    AgentRunner,
    redacted,
)
from loops.runners.outcome import parse_outcome
from loops.runners.process import kill_strays
from loops.runtime import Phase, StateFile, TaskRuntime, WorkerState
from loops.sandbox import SandboxPolicy
from loops.transcripts import Transcripts
from loops.workspace import Workspace

log = logging.getLogger("loops.worker")

Publish = Callable[[Event], object]

USAGE_LIMIT_DEFAULT_WAIT_S = 300.0
OUTAGE_BACKOFF_MAX_S = 300.0


class LoopWorker:
    """Runs one loop. Thread-safety: `handle` (bus events) and the iteration loop run
    on the same thread; beside them the heartbeat only reads, and a run's `RunWatch`
    only touches that run's `AgentRun` (locked) and its cancel event."""

    def __init__(
        self,
        book: TaskBook,
        runner: AgentRunner,
        workspace: Workspace,
        publish: Publish,
        *,
        state_file: Path,
        instance: str | None = None,
        heartbeat_s: float = 30.0,
        agent_timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        remote: str | None = None,
        ledger: PassedLedger | None = None,
        aborts: AbortFeed | None = None,
        usage: UsageWindows | None = None,
        account: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        self.book = book
        self.pricer = Pricer(prices)  # the price table (defaults, then project.json's)
        self.merged = MergedTasks(book.loop, workspace.repo, workspace.main_branch, ledger)
        self.runner = runner
        self.ws = workspace
        self.publish_event = publish
        self.loop = book.loop
        self.source = Source(
            role=Role.WORKER, instance=instance or f"{self.loop}@{_host()}:{os.getpid()}"
        )
        self.heartbeat_s = heartbeat_s
        self.agent_timeout_s = agent_timeout_s
        self.clock = clock
        self.remote = remote
        self.store = StateFile(state_file)
        self.state: WorkerState = self.store.load()
        self.transcripts = Transcripts(book.state_dir / "logs" / "transcripts")
        self.status = LoopStatus.STARTING
        self.current: str | None = None
        self.stop_requested: str | None = None
        self.restart_requested = False
        self.budget_exhausted = False
        self.run_base = 0  # the loop's iteration count when this run began (`-n` counts from it)
        self.cancel: threading.Event | None = None  # set: kill the running agent (shutdown)
        self._sandbox: SandboxPolicy | None = None
        self._lock = threading.Lock()
        self._deferring = False
        self.aborts = aborts  # where `iteration.abort` is read while an agent runs
        self.run: AgentRun | None = None  # the agent run in progress (heartbeat reads it)
        self.usage = usage  # the account-wide usage windows (None: this loop's own only)
        self.account = account  # `bus.usage.account_key` of this loop's agent
        self.announced_window: datetime | None = None  # the usage window already logged
        self.retry_now = False  # the next iteration runs without auto_continue_delay
        self.broken_agent: str | None = None  # the agent cannot start: why (no more calls)
        self.budget = budget  # budgets and the spend ledger (None: no budgets enforced)

    @property
    def sandbox(self) -> SandboxPolicy:
        """How this loop's agent is isolated: the book's `sandbox` config with the
        LOOPS_SANDBOX* overrides; the checkout and the state dir hidden, the object
        store and the loop's private git dir readable, TMPDIRs in the state dir."""
        if self._sandbox is None:
            self._sandbox = self.ws.sandbox_policy(self.book.sandbox)
        return self._sandbox

    # ------------------------------------------------------------------ publishing
    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Inside: `emit` only queues events in the outbox (a reaction to a bus event
        saves its state, its handled mark and its events in one write first)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def flush(self) -> None:
        """Publish the outbox, oldest first; each event leaves it once the bus has it.
        A failure raises and leaves the rest for the next flush (same ids: a copy that
        did land before a lost reply dedupes at every consumer)."""
        while self.state.outbox:
            try:
                event = decode_json(self.state.outbox[0])
            except DecodeError as exc:  # a hand-mangled state file: not worth a crash
                log.error("dropping an unreadable event from the outbox: %s", exc.reason)
            else:
                self.publish_event(event)
            self.state.outbox.pop(0)

    def emit(self, event_cls: type[Event], task_id: str | None = None, **fields: object) -> Event:
        rt = self.state.tasks.get(task_id) if task_id else None
        data: dict[str, object] = {
            "source": self.source,
            "loop": self.loop,
            "correlation_id": rt.correlation_id if rt else None,
        }
        if task_id and "task_id" in event_cls.model_fields:
            data["task_id"] = task_id
        event = event_cls.model_validate({**data, **fields})
        self.state.outbox.append(event.model_dump_json())
        if not self._deferring:
            self.flush()
        return event

    def save(self) -> None:
        with self._lock:
            self.store.save(self.state)

    # ------------------------------------------------------------------ task choice
    def _deps_met(self, task: TaskDef) -> tuple[bool, str | None]:
        for dep in task.depends_on:
            if "/" in dep:
                loop, _, tid = dep.partition("/")
                if loop == self.loop:
                    dep = tid
                elif dep in self.state.external_passed or self.merged.has(dep):
                    continue
                else:
                    return False, dep
            if self.book.record(dep).status is not TaskStatus.PASSED:
                return False, dep
        return True, None

    def passed_and_merged(self, task_id: str) -> bool:
        """The task counts as a success: passed in the state file and merged on main."""
        return (
            self.book.record(task_id).status is TaskStatus.PASSED
            and self.merged.commit(task_id) is not None
        )

    def reject_unmerged_passes(self, before: dict[str, TaskStatus] | None = None) -> list[str]:
        """Set back every `passed` in the state file that no merge backs (see
        `MergedTasks.reject_unmerged`); returns the problems, one per task."""
        problems = self.merged.reject_unmerged(self.book, before)
        for problem in problems:
            log.error("ignored an edit: %s", problem)
        return problems

    def in_flight(self) -> str | None:
        """The task with a claim, merge or conflict in progress (at most one)."""
        for task in self.book.tasks():
            rt = self.state.tasks.get(task.id)
            if rt is None:
                continue
            # A claim already with the gate goes on; a task still in iterations stops
            # while the PM holds it (file overlap with a loop of higher priority), or
            # while a spent budget holds the loop (no agent call).
            active = rt.phase in (Phase.CLAIMED, Phase.VERIFIED) or (
                rt.phase in (Phase.WORKING, Phase.CONFLICT)
                and not rt.held
                and not self.state.budget_hold
            )
            if active and self.book.record(task.id).status not in (
                TaskStatus.PASSED,
                TaskStatus.BLOCKED,
            ):
                return task.id
        return None

    def next_task(self) -> TaskDef | None:
        """The next pending (or failed, retryable) task whose dependencies have merged,
        in priority order, skipping tasks held by the PM or waiting on a person."""
        tasks = self.book.tasks()
        flight = self.in_flight()
        if flight:
            return next(t for t in tasks if t.id == flight)
        if self.broken_agent or self.state.crash_hold or self.state.budget_hold:
            return None  # no agent call until a person fixed the agent
        order = sorted(enumerate(tasks), key=lambda it: (it[1].priority, it[0]))
        for _, task in order:
            record = self.book.record(task.id)
            if record.status not in (TaskStatus.PENDING, TaskStatus.FAILED):
                continue
            if record.attempts >= self.book.max_attempts:
                continue
            rt = self.state.tasks.get(task.id)
            if rt and (rt.held or rt.phase is Phase.WAITING_HUMAN):
                continue
            if self._deps_met(task)[0]:
                return task
        return None

    def block_dependents(self) -> None:
        """A blocked task blocks its dependents (transitively), each with its event."""
        changed = True
        while changed:
            changed = False
            for task in self.book.tasks():
                if self.book.record(task.id).status not in (TaskStatus.PENDING, TaskStatus.FAILED):
                    continue
                for dep in task.depends_on:
                    local = dep.split("/", 1)[1] if dep.startswith(f"{self.loop}/") else dep
                    if "/" in local:
                        continue
                    if self.book.record(local).status is TaskStatus.BLOCKED:
                        self.book.update(
                            task.id, status=TaskStatus.BLOCKED, last_result=f"blocked by {local}"
                        )
                        self.emit(
                            TaskBlocked,
                            task.id,
                            reason=f"depends on blocked task {local}",
                            blocked_by=local,
                        )
                        changed = True
                        break

    def progress(self) -> tuple[int, int]:
        """(tasks passed, tasks) as the state file says (rejected edits already undone)."""
        tasks = self.book.tasks()
        passed = sum(self.book.record(t.id).status is TaskStatus.PASSED for t in tasks)
        return passed, len(tasks)

    def can_progress(self) -> bool:
        """False when every task is merged, blocked, or waiting on a person."""
        if self.stop_requested or self.budget_exhausted:
            return False
        if self.in_flight():
            return True
        return self.next_task() is not None

    def waiting_on_dependency(self) -> bool:
        """Some task is only waiting for another loop's task (which may still merge)."""
        for task in self.book.tasks():
            record = self.book.record(task.id)
            if record.status in (TaskStatus.PENDING, TaskStatus.FAILED):
                met, dep = self._deps_met(task)
                if not met and dep and "/" in dep:
                    return True
        return False

    # ------------------------------------------------------------------ iterations
    def _start_attempt(self, task: TaskDef, rt: TaskRuntime) -> None:
        record = self.book.record(task.id)
        rt.phase = Phase.WORKING
        rt.correlation_id = new_id()
        rt.attempt_iterations = 0
        self.save()
        self.emit(TaskStarted, task.id, attempt=record.attempts + 1)

    def iterate(self, task: TaskDef) -> None:
        """Run the agent once on `task` and act on what it produced."""
        if usage_window(self) is not None:
            return  # no call inside the account's usage window: the driver waits it out
        rt = self.state.task(task.id)
        if rt.phase in (Phase.IDLE,):
            self._start_attempt(task, rt)
        record = self.book.record(task.id)
        attempt = record.attempts + 1
        merging = False
        unmerged = rt.conflict_files and rt.branch_head and not self.ws.has_main(rt.branch_head)
        if rt.phase is Phase.CONFLICT or unmerged:
            # Main first, mechanically (again after a restart lost the merge in progress).
            self.ws.reset_to(rt.branch_head or self.ws.main_head())
            rt.conflict_files = self.ws.merge_main()
            if not rt.conflict_files:
                # Main merged in cleanly: claim the merged tree again, no agent run needed.
                self.ws.commit_iteration(f"{self.loop}: {task.id} merge main")
                rt.branch_head = self.ws.head()
                self.ws.keep(task.id, rt.branch_head)
                self._claim(task, rt, attempt, claim="merged main after a conflict")
                return
            # Real conflicts: the merge stays in progress, markers and all, for the agent.
            rt.conflict_with = self.ws.landed_first(rt.conflict_files)
            rt.phase = Phase.WORKING
            merging = True
            self.save()
        if not budgets.before_call(self, task):
            return  # a budget is spent: the task or the loop is held (loops/budget.py)
        self.current = task.id
        self.status = LoopStatus.RUNNING
        # Each task carries its own line of work: a fresh task starts from main, a retried
        # or resumed one from its last commit (other tasks' work stays on their refs).
        if not merging:
            self.ws.reset_to(rt.branch_head or self.ws.main_head())
        n = self.state.iteration + 1
        delivered = list(rt.undelivered)
        prompt = build_prompt(
            PromptInput(
                task_id=task.id,
                title=task.title,
                description=task.description,
                criteria=task.criteria,
                goal=self.book.goal,
                context=self.book.context,
                instructions=self.book.instructions,
                task_instructions=task.instructions,
                spec_content=task.spec_content,
                last_failure=rt.last_failure,
                guidance=rt.guidance,
                history=rt.history,
                conflict_files=rt.conflict_files,
                conflict_with=rt.conflict_with,
            )
        )
        self.emit(
            IterationStarted,
            task.id,
            iteration=n,
            attempt=attempt,
            agent=self.runner.name,
            prompt_bytes=len(prompt.encode()),
            session_id=rt.session_id,
        )
        for esc in delivered:
            self.emit(EscalationDelivered, task.id, escalation_id=esc)
        rt.undelivered.clear()
        log.info(
            "Iteration %d%s%s ...",
            n - self.run_base,
            f"/{self.book.max_iterations}" if self.book.max_iterations else "",
            f" (iteration {n} of the loop)" if self.run_base else "",
        )
        run = AgentRun(task.id, n, self.clock())
        result = self._run_agent(
            run,
            AgentRequest(
                prompt=prompt,
                worktree=self.ws.path,
                loop=self.loop,
                task_id=task.id,
                iteration=n,
                timeout_s=budgets.call_timeout(self, task.id),
                session_id=rt.session_id,
                model=self.book.model,
                task_iteration=rt.iterations + 1,
                cancel=run.cancel,
                sandbox=self.sandbox,
                on_activity=lambda sign: run.sign(sign, self.clock()),
                on_spawn=run.spawned,
            ),
        )
        result = budgets.after_call(self, result)  # usage checked, then added to the ledger
        # The monitor's abort, if it killed the run (an agent that ended on its own just
        # before keeps its result; the command is then acknowledged as "not running").
        aborted = run.abort if result.failure_detail == INTERRUPTED_DETAIL else None
        interrupted = aborted is None and self.cancel is not None and self.cancel.is_set()
        # Invariant 7 at the one place every reply passes: nothing the agent said or
        # printed reaches events, prompts or transcripts with a secret in it.
        result = redacted(result)
        if result.session_id:
            rt.session_id = result.session_id
        done = self.ws.commit_iteration(f"{self.loop}: {task.id} iteration {n}", keep=task.id)
        if done.commit:
            rt.branch_head = done.commit
        outcome = parse_outcome(result.reply) if result.ok and not interrupted else None
        kind = outcome.kind if outcome else IterationOutcome.FAILED
        markers = (
            self.ws.with_markers(rt.conflict_files)
            if kind is IterationOutcome.CLAIMED and rt.conflict_files
            else []
        )
        if markers:
            # Not a claim while the merge holds markers: the agent gets told, and goes on.
            kind = IterationOutcome.CONTINUE
            rt.last_failure = (
                f"Conflict markers remain in {', '.join(markers)}: resolve every conflict "
                "before you claim the task."
            )
            log.warning("%s claimed with conflict markers left in %s", task.id, ", ".join(markers))
        failure = result.failure
        if outcome and outcome.kind is IterationOutcome.FAILED and failure is None:
            failure = FailureKind.EMPTY_REPLY
        if aborted is not None:
            # Killed by the monitor for a silent agent: an agent call (it counts toward
            # -n), but not the task's failed attempt; the command's hint goes in the next
            # prompt. Acknowledged once the command comes in by the ordinary event path.
            failure = FailureKind.TIMEOUT
            result = replace(result, failure_detail=f"aborted by the monitor: {aborted.reason}")
        elif interrupted:
            # Stopped by the operator (Ctrl-C, shutdown): not the agent's failure. The
            # work so far is committed; the iteration runs again on restart.
            failure = FailureKind.AGENT_ERROR
            result = replace(result, failure_detail=INTERRUPTED_DETAIL)
        counted = (
            not interrupted
            and not result.unrunnable
            and failure not in (FailureKind.USAGE_LIMIT, FailureKind.OUTAGE)
        )
        if result.exit_code not in (0, None) and not result.unrunnable:
            # ralph_loop's warning, with the agent's own last word on stderr.
            tail = f": {result.stderr_tail}" if result.stderr_tail else ""
            log.warning("%s exited %d%s", self.runner.name, result.exit_code, tail)
        crashed = (
            failure is FailureKind.AGENT_ERROR
            and aborted is None
            and not interrupted
            and not result.unrunnable
        )
        self.state.crashes = [*self.state.crashes, result.failure_detail or "?"] if crashed else []
        del self.state.crashes[:-CRASH_STREAK]
        same_crash = len(self.state.crashes) == CRASH_STREAK and len(set(self.state.crashes)) == 1
        retry_at = (
            self._wait_for(result, rt, task.id, n)
            if failure in (FailureKind.USAGE_LIMIT, FailureKind.OUTAGE) and not interrupted
            else None
        )
        self.transcripts.write(self.loop, task.id, n, prompt, result)
        cost = self.pricer.cost(result, self.book.model)
        log.info("%s", cost.line(result))
        self.emit(
            IterationFinished,
            task.id,
            iteration=n,
            attempt=attempt,
            outcome=kind,
            failure=failure,
            failure_detail=result.failure_detail,
            duration_s=result.duration_s,
            changed_files=done.changed_files,
            diff_stat=done.diff_stat,
            commands=result.commands,
            tokens=result.tokens,
            cost_usd=cost.usd,
            cost_source=cost.source,
            model=cost.model,
            reply_chars=len(result.reply),
            reply_tail=result.reply[-500:],
            permission_denials=result.permission_denials,
            commit=done.commit,
            session_id=rt.session_id,
            retry_at=retry_at,
            counted=counted,
        )
        log.debug("preview: %r", result.reply[:200])
        if counted:
            self.state.iteration = n
            rt.iterations += 1
            rt.attempt_iterations += 0 if aborted else 1
            rt.outage_retries = 0
        rt.history.append(_history_line(n, kind, failure, result, done.changed_files))
        if aborted is not None:
            aborted_by_monitor(self, rt, aborted, run)
        elif result.unrunnable:
            cannot_start(self, task.id, rt, result.failure_detail or "the agent cannot start")
        elif same_crash:
            # Not the task's fault: the attempt keeps its iterations for after the fix.
            rt.attempt_iterations = max(rt.attempt_iterations - CRASH_STREAK, 0)
            crash_hold(self, task, rt, result.failure_detail or "?")
        elif kind is IterationOutcome.CLAIMED and outcome:
            log.info("Promise detected: %r — verifying (iteration %d).", outcome.text, n)
            self._claim(task, rt, attempt, claim=outcome.text)
        elif kind is IterationOutcome.BLOCKED and outcome:
            self._ask(task, rt, outcome.text)
        elif counted and rt.attempt_iterations >= self.book.attempt_iterations:
            self.fail_attempt(
                task.id, f"no verified claim after {rt.attempt_iterations} iterations"
            )
        self.save()

    def _abort_cursor(self) -> str | None:
        """Where the run's watch starts reading for aborts (None: it cannot read them;
        the run then ends at its timeout, and the command is acknowledged after it)."""
        if self.aborts is None:
            return None
        try:
            return self.aborts.cursor()
        except Exception as exc:  # a bus hiccup must not cost the iteration
            log.warning("cannot watch for the monitor's aborts during this run: %s", exc)
            return None

    def _run_agent(self, run: AgentRun, request: AgentRequest) -> AgentResult:
        """Run the agent with a `RunWatch` beside it (liveness, aborts, stop)."""
        watch = RunWatch(
            run,
            worktree=self.ws.path,
            clock=self.clock,
            scan_s=min(max(self.heartbeat_s / 2, 0.2), 10.0),
            stop=self.cancel,
            feed=self.aborts,
            cursor=self._abort_cursor(),
            handled=lambda command_id: command_id in self.state.aborted,
            on_error=lambda exc: log.warning("watching the agent: %s", exc),
        )
        self.run = run
        watch.start()
        try:
            return self.runner.run(request)
        finally:
            watch.finish()
            self.run = None

    def _wait_for(
        self, result: AgentResult, rt: TaskRuntime, task_id: str, iteration: int
    ) -> datetime:
        now = self.clock()
        if result.failure is FailureKind.USAGE_LIMIT:
            until = result.retry_at or now + timedelta(seconds=USAGE_LIMIT_DEFAULT_WAIT_S)
            until = record_usage_limit(
                self, until, estimated=result.retry_at is None, task_id=task_id, iteration=iteration
            )
            log.warning(
                "usage limit: waiting until %s (not counted as an iteration)", until.isoformat()
            )
        else:
            rt.outage_retries += 1
            backoff = min(2.0**rt.outage_retries, OUTAGE_BACKOFF_MAX_S)
            until = now + timedelta(seconds=backoff)
            log.warning("agent outage (%s): retrying in %.0fs", result.failure_detail, backoff)
        self.state.waiting_until = max(until, now)
        return self.state.waiting_until

    def _claim(self, task: TaskDef, rt: TaskRuntime, attempt: int, claim: str) -> None:
        if self.remote:
            self.ws.push(self.remote)
        rt.phase = Phase.CLAIMED
        rt.claim_commit = self.ws.head()
        rt.conflict_files = []
        rt.conflict_with = None
        self.save()
        self._publish_claim(task.id, attempt, rt.claim_commit, claim)

    def _publish_claim(self, task_id: str, attempt: int, commit: str, claim: str) -> None:
        self.emit(
            TaskClaimed,
            task_id,
            attempt=attempt,
            commit=commit,
            branch=self.ws.branch,
            base=self.ws.main_head(),
            claim=claim,
        )

    def _ask(self, task: TaskDef, rt: TaskRuntime, question: str) -> None:
        rt.phase = Phase.WAITING_HUMAN
        rt.escalation_id = short_id("e")
        rt.question = question
        self.save()
        self.emit(
            EscalationRaised,
            task.id,
            escalation_id=rt.escalation_id,
            kind=EscalationKind.QUESTION,
            severity=Severity.MEDIUM,
            question=question,
        )
        self.emit(
            TaskBlocked, task.id, reason=f"waiting on a person: {question}", waiting_on_human=True
        )
        log.warning(
            "BLOCKED on %s: %s (answer with `loops answer %s ...`)",
            task.id,
            question,
            rt.escalation_id,
        )

    def fail_attempt(self, task_id: str, reason: str) -> None:
        """End the current attempt: attempts + 1; at max_attempts the task is blocked."""
        record = self.book.record(task_id)
        attempts = record.attempts + 1
        rt = self.state.task(task_id)
        rt.phase = Phase.IDLE
        rt.claim_commit = None
        if attempts >= self.book.max_attempts:
            self.book.update(
                task_id, status=TaskStatus.BLOCKED, attempts=attempts, last_result=reason
            )
            self.save()
            self.emit(TaskFailed, task_id, attempt=attempts, reason=reason)
            self.emit(
                TaskBlocked,
                task_id,
                reason=f"max attempts ({self.book.max_attempts}) reached: {reason}",
            )
            self.block_dependents()
        else:
            self.book.update(
                task_id, status=TaskStatus.FAILED, attempts=attempts, last_result=reason
            )
            self.save()
            self.emit(TaskFailed, task_id, attempt=attempts, reason=reason)

    # ------------------------------------------------------------------ heartbeat
    def heartbeat(self) -> LoopHeartbeat:
        passed, total = self.progress()
        rt = self.state.tasks.get(self.current) if self.current else None
        run = self.run  # the agent's liveness while one runs (contract: agents/README.md)
        started, activity_at, activity, pid = (
            run.snapshot() if run is not None else (None, None, None, None)
        )
        event = LoopHeartbeat(
            source=self.source,
            loop=self.loop,
            status=self.status,
            pid=os.getpid(),
            host=_host(),
            interval_s=self.heartbeat_s,
            task_id=self.current,
            iteration=rt.iterations if rt else None,
            waiting_until=self.state.waiting_until,
            passed=passed,
            total=total,
            agent_started_at=started,
            agent_activity_at=activity_at,
            agent_activity=activity,
            agent_pid=pid,
        )
        self.publish_event(event)
        self.transcripts.write_health(
            self.book.state_dir / "health.json",
            self.book.display_name,
            self.status,
            self.current,
            passed,
            total,
        )
        return event

    def started(self) -> None:
        """Set up the workspace; `SandboxUnavailable` when the sandbox is required and
        cannot run here (nothing starts)."""
        self.sandbox.check()
        budgets.started(self)
        self.ws.ensure()
        if kill_strays(self.ws.path):  # agents of a worker that was killed (unsandboxed)
            log.warning("killed processes left over from an earlier agent run")
        if self.sandbox.tmp_root is not None:  # TMPDIRs of runs a crash left behind
            shutil.rmtree(self.sandbox.tmp_root, ignore_errors=True)
        retry_after_broken_agent(self)
        problems = self.reject_unmerged_passes()
        if problems:
            self.emit(
                StateRejected, path=str(getattr(self.book, "state_path", "")), problems=problems
            )
        passed, total = self.progress()
        self.status = LoopStatus.RUNNING
        self.emit(
            LoopStarted,
            agent=self.runner.name,
            pid=os.getpid(),
            host=_host(),
            tasks_total=total,
            tasks_passed=passed,
            sandbox_warning=self.sandbox.status().warning,
        )

    def resume(self, claimed: set[str], raised: set[str]) -> None:
        """After a restart: re-publish a claim in flight or an open question of ours
        that the stream does not hold (a Redis that kept nothing), so neither waits
        forever. The gate and the merge queue are idempotent per commit."""
        for task in self.book.tasks():
            rt = self.state.tasks.get(task.id)
            if rt is None or self.book.record(task.id).status is TaskStatus.PASSED:
                continue
            attempt = self.book.record(task.id).attempts + 1
            in_flight = rt.phase in (Phase.CLAIMED, Phase.VERIFIED)
            if in_flight and rt.claim_commit and rt.claim_commit not in claimed:
                log.warning("re-publishing the claim of %s (%s)", task.id, rt.claim_commit)
                self._publish_claim(task.id, attempt, rt.claim_commit, "resumed")
            if rt.phase is Phase.WAITING_HUMAN and rt.question and rt.escalation_id not in raised:
                self.emit(
                    EscalationRaised,
                    task.id,
                    escalation_id=rt.escalation_id,
                    kind=EscalationKind.QUESTION,
                    severity=Severity.MEDIUM,
                    question=rt.question,
                )

    def stopped(self, status: LoopStatus, reason: str) -> None:
        self.status = status
        self.save()
        self.heartbeat()
        self.emit(LoopStopped, status=status, reason=reason)


def _host() -> str:
    return socket.gethostname()


def _history_line(
    n: int,
    kind: IterationOutcome,
    failure: FailureKind | None,
    result: AgentResult,
    changed: list[str],
) -> str:
    what = f"failed ({failure.value})" if failure else kind.value
    files = (
        ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
        if changed
        else "no files changed"
    )
    tail = " ".join(result.reply.strip().split())[-160:]
    return f"iteration {n}: {what}; {files}; reply ended: {tail!r}"
