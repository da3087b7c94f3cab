"""Wiring one loop worker to the bus: its consumer group and its reactions."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from bus import Inbox, PassedLedger, RedisBus
from bus.spend import SpendLedger
from bus.usage import UsageWindows
from events import (
    EscalationRaised,
    Event,
    IterationAbort,
    ModelPrice,
    TaskClaimed,
    TaskPassed,
    utcnow,
)
from loops.book import TaskBook
from loops.budget import BudgetGuard
from loops.budget_config import ProjectBudget
from loops.driver import WorkerExit, run_worker
from loops.reactions import WORKER_TYPES, handle
from loops.runners import DEFAULT_TIMEOUT_S, AgentRunner
from loops.runners.account import agent_account
from loops.worker import LoopWorker
from loops.workspace import Workspace


def worker_group(loop: str) -> str:
    return f"worker:{loop}"


class BusAborts:
    """`loops.liveness.AbortFeed` on the bus: the stream's new entries since a cursor,
    read by range with the `type` field filtered before decoding (cheap), so the
    worker sees `iteration.abort` while its main thread is blocked in the agent run."""

    def __init__(self, bus: RedisBus, loop: str) -> None:
        self.bus = bus
        self.loop = loop

    def cursor(self) -> str:
        return self.bus.last_id()

    def since(self, cursor: str) -> tuple[str, list[IterationAbort]]:
        upto = self.bus.last_id()
        if upto == cursor:
            return cursor, []
        found = [
            event
            for _, event in self.bus.replay(
                since=f"({cursor}", until=upto, types={"iteration.abort"}, loop=self.loop
            )
            if isinstance(event, IterationAbort)
        ]
        return upto, found


# What a worker reacts to whatever loop it names (a `bus.Router` hands these to every
# loop it serves; the rest go to the loop `event.loop` names): another loop's merged
# task (cross-loop dependencies) and an answer, matched by escalation id.
BROADCAST_TYPES = frozenset({"task.passed", "escalation.answered", "budget.raised"})


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
        agent_timeout_s: float | None = None,
        remote: str | None = None,
        inbox: Inbox | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        budget: ProjectBudget | None = None,
    ) -> None:
        """`inbox`: this loop's share of its process's `bus.Router` (what `loops up`
        gives each loop); without one the worker has its own consumer group
        (`loops worker LOOP`, one loop per process)."""
        root = state_root or repo / ".loops"
        self.worker = LoopWorker(
            book,
            runner,
            Workspace(repo, book.loop, main_branch, root=root / "worktrees"),
            bus.publish,
            state_file=root / "state" / f"{book.loop}.worker.json",
            instance=instance,
            heartbeat_s=heartbeat_s,
            # The flag of this run, else the loop's config, else the default.
            agent_timeout_s=agent_timeout_s or book.agent_timeout_s or DEFAULT_TIMEOUT_S,
            remote=remote,
            ledger=PassedLedger(bus.client, bus.prefix),
            aborts=BusAborts(bus, book.loop),
            usage=UsageWindows(bus.client, bus.prefix),
            account=agent_account(runner, name=book.account),
            prices=prices,
            budget=BudgetGuard(SpendLedger(bus.client, bus.prefix), budget, book.loop, utcnow)
            if budget is not None
            else None,
        )
        # Other loops' merged tasks (cross-loop dependencies), even from before this
        # worker's group existed; and what the stream holds of our own claims and
        # questions, so a restart can re-publish what it lost.
        claimed: set[str] = set()
        raised: set[str] = set()
        for _, event in bus.replay(types={"task.passed", "task.claimed", "escalation.raised"}):
            if isinstance(event, TaskPassed) and event.loop and event.loop != book.loop:
                self.worker.state.external_passed.add(f"{event.loop}/{event.task_id}")
            elif isinstance(event, TaskClaimed) and event.loop == book.loop:
                claimed.add(event.commit)
            elif isinstance(event, EscalationRaised) and event.loop == book.loop:
                raised.add(event.escalation_id)
        self._resume = (claimed, raised)
        self.inbox = inbox
        self.subscription = (
            None
            if inbox is not None
            else bus.subscribe(
                worker_group(book.loop),
                book.loop,  # one worker per loop: a restarted one takes its pending back
                self._handle,
                types=WORKER_TYPES,
            )
        )

    def _handle(self, event: Event) -> None:
        handle(self.worker, event)

    def resume(self) -> None:
        """Re-publish what a restart lost (call once the worker has started)."""
        self.worker.resume(*self._resume)

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> WorkerExit:
        """Run the loop until stopped (or, with `until_idle`, until it cannot progress)."""
        return run_worker(self.worker, self.poll, stop, until_idle=until_idle, resume=self.resume)

    def poll(self, block_ms: int) -> int:
        if self.inbox is not None:
            return self.inbox.poll(self._handle, block_ms)
        assert self.subscription is not None
        return self.subscription.poll(block_ms)
