"""A loop worker's life on the bus: start, heartbeats (and the idle signal `loops up`
reads from them), resume after a restart, stop. A part of `LoopWorker`
(`loops/worker.py`), kept apart by responsibility."""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, cast

from events import (
    EscalationKind,
    EscalationRaised,
    LoopHeartbeat,
    LoopStarted,
    LoopStatus,
    LoopStopped,
    Severity,
    StateRejected,
    TaskClaimed,
)
from loops import budget as budgets
from loops.agent_failures import retry_after_broken_agent
from loops.book import FileStatus
from loops.choice import TaskChoice
from loops.runners.process import kill_strays
from loops.runtime import Phase
from loops.worker_base import host

if TYPE_CHECKING:
    from loops.worker import LoopWorker

log = logging.getLogger("loops.worker")


class Lifecycle(TaskChoice):
    """Start, heartbeat, resume and stop (mixed into `LoopWorker`)."""

    def announce(self) -> None:
        """Publish a heartbeat at once when whether the loop can progress, or is paused,
        changed: `loops up` decides idle from these (through the read model)."""
        progressing = self.can_progress()
        if progressing is self.progressing and self.state.paused is self._announced_paused:
            return
        self.progressing, self._announced_paused = progressing, self.state.paused
        self.heartbeat()

    def heartbeat(self) -> LoopHeartbeat:
        with self._beat:
            return self._heartbeat()

    def _heartbeat(self) -> LoopHeartbeat:
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
            host=host(),
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
            can_progress=self.progressing,
            paused=self.state.paused,
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
        budgets.started(cast("LoopWorker", self))
        self.ws.ensure()
        if kill_strays(self.ws.path):  # agents of a worker that was killed (unsandboxed)
            log.warning("killed processes left over from an earlier agent run")
        if self.sandbox.tmp_root is not None:  # TMPDIRs of runs a crash left behind
            shutil.rmtree(self.sandbox.tmp_root, ignore_errors=True)
        retry_after_broken_agent(cast("LoopWorker", self))
        problems = self.reject_unmerged_passes()
        if problems:
            self.emit(StateRejected, path=str(self.book.state_path), problems=problems)
        passed, total = self.progress()
        self.status = LoopStatus.RUNNING
        self.emit(
            LoopStarted,
            agent=self.runner.name,
            pid=os.getpid(),
            host=host(),
            tasks_total=total,
            tasks_passed=passed,
            sandbox_warning=self.sandbox.status().warning,
            tasks=self.snapshot(),
            max_attempts=self.book.max_attempts,
        )

    def resume(self, claimed: set[str], raised: set[str]) -> None:
        """After a restart: re-publish a claim in flight or an open question of ours
        that the stream does not hold (a Redis that kept nothing), so neither waits
        forever. The gate and the merge queue are idempotent per commit."""
        for task in self.book.tasks():
            rt = self.state.tasks.get(task.id)
            if rt is None or self.book.record(task.id).status is FileStatus.PASSED:
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
        self.emit(LoopStopped, status=status, reason=reason, tasks=self.snapshot())

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
