"""A loop worker's state, settings and outbox: what every part of it shares
(`loops/worker.py` is the whole). Events a reaction decides wait in the outbox, saved
with the state, and leave it once the bus has them."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from bus import PassedLedger
from bus.usage import UsageWindows
from events import (
    DecodeError,
    EscalationKind,
    EscalationRaised,
    Event,
    LoopStatus,
    ModelPrice,
    Role,
    Severity,
    Source,
    TaskBlocked,
    decode_json,
)
from loops.book import TaskBook
from loops.budget import BudgetGuard
from loops.cost import Pricer
from loops.liveness import AbortFeed, AgentRun
from loops.merged import MergedTasks
from loops.runners import DEFAULT_TIMEOUT_S, AgentRunner
from loops.runtime import StateFile, WorkerState
from loops.sandbox import SandboxPolicy
from loops.transcripts import Transcripts
from loops.workspace import Workspace

log = logging.getLogger("loops.worker")

Publish = Callable[[Event], object]


def host() -> str:
    return socket.gethostname()


class WorkerBase:
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
            role=Role.WORKER, instance=instance or f"{self.loop}@{host()}:{os.getpid()}"
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
        self.progressing: bool | None = None  # `can_progress()` as last announced
        self._announced_paused = False
        self._beat = threading.Lock()  # heartbeats leave in the order their fields were read

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

    def wait_on_person(
        self,
        task_id: str,
        escalation_id: str,
        question: str,
        *,
        kind: EscalationKind,
        severity: Severity,
        reason: str | None = None,
    ) -> None:
        """Raise the question and block the task on it (waiting on a person): the one way
        a task comes to wait on a person, so it never waits without an open question."""
        self.emit(
            EscalationRaised,
            task_id,
            escalation_id=escalation_id,
            kind=kind,
            severity=severity,
            question=question,
        )
        reason = reason or f"waiting on a person: {question}"
        self.emit(TaskBlocked, task_id, reason=reason, waiting_on_human=True)

    def save(self) -> None:
        with self._lock:
            self.store.save(self.state)
