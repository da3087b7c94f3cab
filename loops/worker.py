"""The loop worker: the Ralph loop, done properly.

It picks the next open task whose dependencies have merged, runs the agent in the
loop's own worktree, commits each iteration, and publishes what happened. An agent's
"done" becomes a `task.claimed`; the task passes only on the `merge.completed` that
follows verification. Bus events (verdicts, merges, answers, commands) are handled in
`loops/reactions.py`; this module runs iterations. Which task comes next is
`loops/choice.py`, start, heartbeats and stop `loops/lifecycle.py`, what a run
amounts to `loops/iteration.py`, and every phase change of a task is a transition of
`TaskRuntime` (`loops/runtime.py`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from events import (
    EscalationDelivered,
    EscalationKind,
    FailureKind,
    IterationFinished,
    IterationOutcome,
    IterationStarted,
    LoopStatus,
    Severity,
    TaskBlocked,
    TaskFailed,
    TaskStarted,
    new_id,
    short_id,
)
from loops import budget as budgets
from loops.agent_failures import (
    CRASH_STREAK,
    aborted_by_monitor,
    cannot_start,
    crash_hold,
    note_crash,
    record_usage_limit,
    usage_window,
)
from loops.book import TaskDef, TaskStatus
from loops.iteration import Step, assess, history_line
from loops.jobs import run_in_workspace
from loops.lifecycle import Lifecycle
from loops.liveness import AgentRun, RunWatch
from loops.prompt import PromptInput, build_prompt
from loops.runners import AgentRequest, AgentResult
from loops.runtime import Phase, TaskRuntime
from loops.workspace import IterationCommit

log = logging.getLogger("loops.worker")

USAGE_LIMIT_DEFAULT_WAIT_S = 300.0
OUTAGE_BACKOFF_MAX_S = 300.0


class LoopWorker(Lifecycle):
    """Runs one loop. Thread-safety: `handle` (bus events) and the iteration loop run
    on the same thread; beside them the heartbeat only reads, and a run's `RunWatch`
    only touches that run's `AgentRun` (locked) and its cancel event. Its state and
    outbox are `WorkerBase`'s, its task choice `TaskChoice`'s, its life on the bus
    `Lifecycle`'s; here: iterations, claims and questions."""

    # ------------------------------------------------------------------ iterations
    def _start_attempt(self, task: TaskDef, rt: TaskRuntime) -> None:
        record = self.book.record(task.id)
        rt.start_attempt(new_id())
        self.save()
        self.emit(TaskStarted, task.id, attempt=record.attempts + 1)

    def iterate(self, task: TaskDef) -> None:
        """One step of the loop: build the prompt, call the agent, record what it did,
        act on it (mini-swe-agent's query, execute, observe). Policies live beside it:
        `assess` (what the run amounts to), `loops/agent_failures.py` (crashes, usage
        windows, aborts), `TaskRuntime`'s transitions (where the task goes)."""
        if usage_window(self) is not None:
            return  # no call inside the account's usage window: the driver waits it out
        rt = self.state.task(task.id)
        if rt.phase in (Phase.IDLE, Phase.DONE):
            self._start_attempt(task, rt)
        attempt = self.book.record(task.id).attempts + 1
        merging = self._merge_main_first(task, rt, attempt)
        if merging is None:
            return  # main merged in cleanly: claimed again, no agent run needed
        if not budgets.before_call(self, task):
            return  # a budget is spent: the task or the loop is held (loops/budget.py)
        self.current, self.status = task.id, LoopStatus.RUNNING
        if not merging:
            # Each task carries its own line of work: a fresh task starts from main, a
            # retried or resumed one from its last commit (others' work stays on their refs).
            self.ws.reset_to(rt.branch_head or self.ws.main_head())
        n = self.state.iteration + 1
        prompt = self._prompt(task, rt, n, attempt)
        run = AgentRun(task.id, n, self.clock())
        result, done = self.call_agent(run, self._request(task, rt, n, prompt, run))
        result = budgets.after_call(self, result)  # usage checked, then added to the ledger
        step = assess(result, run, cancelled=self.cancel is not None and self.cancel.is_set())
        if step.result.session_id:
            rt.session_id = step.result.session_id
        if done.commit:
            rt.branch_head = done.commit
        step = self._unresolved_conflicts(task, rt, step)
        self._record(task, rt, n, attempt, prompt, step, done)
        self._act(task, rt, attempt, n, step, run)
        self.save()

    def _merge_main_first(self, task: TaskDef, rt: TaskRuntime, attempt: int) -> bool | None:
        """After a merge conflict: merge main into the task's line, mechanically (again
        after a restart lost the merge in progress). True: the merge is in progress with
        conflicts for the agent; None: it merged cleanly and is claimed; False: no merge."""
        unmerged = rt.conflict_files and rt.branch_head and not self.ws.has_main(rt.branch_head)
        if not (rt.phase is Phase.CONFLICT or unmerged):
            return False
        self.ws.reset_to(rt.branch_head or self.ws.main_head())
        rt.conflict_files = self.ws.merge_main()
        if not rt.conflict_files:
            self.ws.commit_iteration(f"{self.loop}: {task.id} merge main")
            rt.branch_head = self.ws.head()
            self.ws.keep(task.id, rt.branch_head)
            self._claim(task, rt, attempt, claim="merged main after a conflict")
            return None
        # Real conflicts: the merge stays in progress, markers and all, for the agent.
        rt.work_on_conflicts(self.ws.landed_first(rt.conflict_files))
        self.save()
        return True

    def _prompt(self, task: TaskDef, rt: TaskRuntime, n: int, attempt: int) -> str:
        """The iteration's prompt; publishes `iteration.started` (and the answers it
        delivers to the agent)."""
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
        limit = f"/{self.book.max_iterations}" if self.book.max_iterations else ""
        whole = f" (iteration {n} of the loop)" if self.run_base else ""
        log.info("Iteration %d%s%s ...", n - self.run_base, limit, whole)
        return prompt

    def _request(
        self, task: TaskDef, rt: TaskRuntime, n: int, prompt: str, run: AgentRun
    ) -> AgentRequest:
        return AgentRequest(
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
        )

    def _unresolved_conflicts(self, task: TaskDef, rt: TaskRuntime, step: Step) -> Step:
        """Not a claim while the merge holds markers: the agent gets told, and goes on."""
        if step.kind is not IterationOutcome.CLAIMED or not rt.conflict_files:
            return step
        markers = self.ws.with_markers(rt.conflict_files)
        if not markers:
            return step
        rt.last_failure = (
            f"Conflict markers remain in {', '.join(markers)}: resolve every conflict "
            "before you claim the task."
        )
        log.warning("%s claimed with conflict markers left in %s", task.id, ", ".join(markers))
        return replace(step, kind=IterationOutcome.CONTINUE)

    def _record(
        self,
        task: TaskDef,
        rt: TaskRuntime,
        n: int,
        attempt: int,
        prompt: str,
        step: Step,
        done: IterationCommit,
    ) -> None:
        """The run's transcript, its `iteration.finished`, and the counters."""
        result = step.result
        if result.exit_code not in (0, None) and not result.unrunnable:
            # ralph_loop's warning, with the agent's own last word on stderr.
            tail = f": {result.stderr_tail}" if result.stderr_tail else ""
            log.warning("%s exited %d%s", self.runner.name, result.exit_code, tail)
        retry_at = self._wait_for(result, rt, task.id, n) if step.waits else None
        self.transcripts.write(self.loop, task.id, n, prompt, result)
        cost = self.pricer.cost(result, self.book.model)
        log.info("%s", cost.line(result))
        self.emit(
            IterationFinished,
            task.id,
            iteration=n,
            attempt=attempt,
            outcome=step.kind,
            failure=step.failure,
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
            counted=step.counted,
        )
        log.debug("preview: %r", result.reply[:200])
        if step.counted:
            self.state.iteration = n
            rt.iterations += 1
            rt.attempt_iterations += 0 if step.aborted else 1
            rt.outage_retries = 0
        rt.history.append(history_line(n, step, done.changed_files))

    def _act(
        self, task: TaskDef, rt: TaskRuntime, attempt: int, n: int, step: Step, run: AgentRun
    ) -> None:
        """Where the task goes after the run."""
        detail = step.result.failure_detail
        same_crash = note_crash(self, step.crashed, detail)
        if step.aborted is not None:
            aborted_by_monitor(self, rt, step.aborted, run)
        elif step.result.unrunnable:
            cannot_start(self, task.id, rt, detail or "the agent cannot start")
        elif same_crash:
            # Not the task's fault: the attempt keeps its iterations for after the fix.
            rt.attempt_iterations = max(rt.attempt_iterations - CRASH_STREAK, 0)
            crash_hold(self, task, rt, detail or "?")
        elif step.kind is IterationOutcome.CLAIMED and step.outcome:
            log.info("Promise detected: %r — verifying (iteration %d).", step.outcome.text, n)
            self._claim(task, rt, attempt, claim=step.outcome.text)
        elif step.kind is IterationOutcome.BLOCKED and step.outcome:
            self._ask(task, rt, step.outcome.text)
        elif step.counted and rt.attempt_iterations >= self.book.attempt_iterations:
            self.fail_attempt(
                task.id, f"no verified claim after {rt.attempt_iterations} iterations"
            )

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

    def call_agent(
        self, run: AgentRun, request: AgentRequest
    ) -> tuple[AgentResult, IterationCommit]:
        """The one agent call: the iteration runs in the loop's own work tree through
        `loops.jobs.run_in_workspace`, the function an agent host's rq job runs in its
        clone (sandbox, stray processes, redaction, commit), with a `RunWatch` beside
        it (liveness, aborts, stop). Returns the redacted result and the commit. Hooks
        around every agent call (budgets) go here."""
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
            message = f"{self.loop}: {request.task_id} iteration {request.iteration}"
            return run_in_workspace(
                self.ws, self.runner, request, self.sandbox, message, keep=request.task_id
            )
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
        commit = self.ws.head()
        rt.claim(commit)
        self.save()
        self._publish_claim(task.id, attempt, commit, claim)

    def _ask(self, task: TaskDef, rt: TaskRuntime, question: str) -> None:
        escalation_id = short_id("e")
        rt.ask(escalation_id, question)
        self.save()
        self.wait_on_person(
            task.id, escalation_id, question, kind=EscalationKind.QUESTION, severity=Severity.MEDIUM
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
        rt.end_attempt()
        if attempts >= self.book.max_attempts:
            rt.block()
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
