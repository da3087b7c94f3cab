"""Which task a loop works on next: dependencies (of this loop and of others),
the claim in flight, tasks held or waiting on a person, and what counts as progress.
A part of `LoopWorker` (`loops/worker.py`), kept apart by responsibility."""

from __future__ import annotations

import logging

from events import TaskBlocked, TaskSnapshot
from loops.book import FileStatus, TaskDef
from loops.runtime import Phase
from loops.worker_base import WorkerBase

log = logging.getLogger("loops.worker")


class TaskChoice(WorkerBase):
    """The worker's task choice (mixed into `LoopWorker`)."""

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
            if self.book.record(dep).status is not FileStatus.PASSED:
                return False, dep
        return True, None

    def reject_unmerged_passes(self, before: dict[str, FileStatus] | None = None) -> list[str]:
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
                FileStatus.PASSED,
                FileStatus.BLOCKED,
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
            if record.status not in (FileStatus.PENDING, FileStatus.FAILED):
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
                if self.book.record(task.id).status not in (FileStatus.PENDING, FileStatus.FAILED):
                    continue
                for dep in task.depends_on:
                    local = dep.split("/", 1)[1] if dep.startswith(f"{self.loop}/") else dep
                    if "/" in local:
                        continue
                    if self.book.record(local).status is FileStatus.BLOCKED:
                        self.state.task(task.id).block(blocked_by=local)
                        self.book.update(
                            task.id, status=FileStatus.BLOCKED, last_result=f"blocked by {local}"
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
        passed = sum(self.book.record(t.id).status is FileStatus.PASSED for t in tasks)
        return passed, len(tasks)

    def snapshot(self) -> list[TaskSnapshot]:
        """Every task as the state file has it, in the vocabulary (`loop.started`,
        `loop.stopped`)."""
        return [
            TaskSnapshot(
                id=task.id,
                status=record.status.task_status,
                attempts=record.attempts,
                last_result=record.last_result,
            )
            for task in self.book.tasks()
            for record in [self.book.record(task.id)]
        ]

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
            if record.status in (FileStatus.PENDING, FileStatus.FAILED):
                met, dep = self._deps_met(task)
                if not met and dep and "/" in dep:
                    return True
        return False
