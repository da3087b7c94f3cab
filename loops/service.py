"""Wiring one loop worker to the bus: its consumer group and its reactions."""

from __future__ import annotations

from pathlib import Path

from bus import RedisBus
from events import TaskPassed
from loops.book import TaskBook
from loops.reactions import handle
from loops.runners import AgentRunner
from loops.worker import LoopWorker
from loops.workspace import Workspace


def worker_group(loop: str) -> str:
    return f"worker:{loop}"


class WorkerService:
    """A `LoopWorker` plus the subscription that feeds it events (one thread)."""

    def __init__(
        self,
        bus: RedisBus,
        book: TaskBook,
        runner: AgentRunner,
        repo: Path,
        *,
        main_branch: str = "main",
        state_root: Path | None = None,
        instance: str | None = None,
        heartbeat_s: float = 30.0,
        agent_timeout_s: float = 30 * 60.0,
        remote: str | None = None,
    ) -> None:
        root = state_root or repo / ".loops"
        self.worker = LoopWorker(
            book,
            runner,
            Workspace(repo, book.loop, main_branch, root=root / "worktrees"),
            bus.publish,
            state_file=root / "state" / f"{book.loop}.worker.json",
            instance=instance,
            heartbeat_s=heartbeat_s,
            agent_timeout_s=agent_timeout_s,
            remote=remote,
        )
        # Other loops' merged tasks (cross-loop dependencies), even from before this
        # worker's group existed.
        for _, event in bus.replay(types={"task.passed"}):
            if isinstance(event, TaskPassed) and event.loop and event.loop != book.loop:
                self.worker.state.external_passed.add(f"{event.loop}/{event.task_id}")
        self.subscription = bus.subscribe(
            worker_group(book.loop),
            book.loop,  # one worker per loop: a restarted one takes its pending entries back
            lambda event: handle(self.worker, event),
        )

    def poll(self, block_ms: int) -> int:
        return self.subscription.poll(block_ms)
