"""The worker's own state beyond test-state.json: iterations, sessions, claims in
flight, answers and hints. Written atomically after every change, so kill -9 at any
point resumes the same task with the same attempts (invariant 5)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from bus.idempotency import Window
from events.secrets import redact_obj
from infra.files import write_json_atomic


class Phase(StrEnum):
    """Where a task is in its attempt, from the worker's side."""

    IDLE = "idle"  # not started, or back with the loop after a failed verification
    WORKING = "working"  # iterations running
    CLAIMED = "claimed"  # task.claimed published; waiting for the gate
    VERIFIED = "verified"  # verification passed; waiting for the merge queue
    WAITING_HUMAN = "waiting_human"  # a question (BLOCKED) or a sign-off is open
    CONFLICT = "conflict"  # the merge conflicted; the next iteration merges main first
    DONE = "done"  # merged


class TaskRuntime(BaseModel):
    iterations: int = 0  # counted agent runs on this task, all attempts
    attempt_iterations: int = 0  # counted runs in the current attempt
    phase: Phase = Phase.IDLE
    correlation_id: str | None = None
    session_id: str | None = None
    claim_commit: str | None = None
    branch_head: str | None = None  # the last commit of this task's own work
    escalation_id: str | None = None
    question: str | None = None
    last_failure: str = ""
    conflict_files: list[str] = Field(default_factory=list)
    conflict_tries: int = 0
    conflict_with: str | None = None  # what landed on main first in the conflict files
    guidance: list[str] = Field(default_factory=list)
    undelivered: list[str] = Field(
        default_factory=list
    )  # escalation ids answered, not yet in a prompt
    history: list[str] = Field(default_factory=list)
    held: str | None = None  # the PM's reason for holding this task
    resume: Phase | None = None  # where to go back to once another role's question is answered
    outage_retries: int = 0
    # Blocked because the agent could not start (not the task's fault): the next run,
    # with the agent fixed, takes the task up again (`loops.reruns`).
    agent_broken: bool = False


HANDLED_KEEP = 500  # event ids the worker remembers as handled (at least)


class WorkerState(BaseModel):
    iteration: int = 0  # counted iterations of the whole loop
    paused: bool = False
    waiting_until: datetime | None = None
    tasks: dict[str, TaskRuntime] = Field(default_factory=dict)
    external_passed: set[str] = Field(default_factory=set)  # "loop/TASK" merged elsewhere
    handled: list[str] = Field(default_factory=list)  # recent event ids (idempotency)
    # Events decided but not yet on the bus (JSON, oldest first): saved in the same
    # write as the state change and the handled mark that produced them, published
    # after it, removed once the bus has them (the outbox).
    outbox: list[str] = Field(default_factory=list)
    # `iteration.abort` commands that killed a run (id -> what was done), so the
    # command is acknowledged with it when it comes in by the event path.
    aborted: dict[str, str] = Field(default_factory=dict)
    crashes: list[str] = Field(default_factory=list)  # the last agent crashes in a row
    # The escalation of an agent that crashed the same way CRASH_STREAK times in a row:
    # while set, the loop calls no agent (answer it, or `loops resume`).
    crash_hold: str | None = None
    # A spent budget that holds the whole loop (`loop:NAME`, `project` or `day`): no
    # agent call until a raise, an answer or `loops resume` (loops/budget.py).
    budget_hold: str | None = None
    budget_escalations: dict[str, str] = Field(default_factory=dict)  # escalation -> scope
    _window: Window | None = PrivateAttr(default=None)

    def task(self, task_id: str) -> TaskRuntime:
        return self.tasks.setdefault(task_id, TaskRuntime())

    def _handled(self) -> Window:
        # The window's memory is `handled` itself, saved in the same write as the
        # reactions it guards.
        if self._window is None or self._window.ids is not self.handled:
            self._window = Window(HANDLED_KEEP, self.handled)
        return self._window

    def seen(self, event_id: str) -> bool:
        """True if the event was handled already (its reaction is saved)."""
        return self._handled().seen(event_id)

    def mark(self, event_id: str) -> None:
        """Record the event as handled: call it only once its reaction is done."""
        self._handled().mark(event_id)


_HISTORY_KEEP = 200


class StateFile:
    """Atomic JSON persistence of a `WorkerState`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> WorkerState:
        try:
            return WorkerState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return WorkerState()
        except (ValidationError, ValueError):
            # A corrupt runtime file must not stop the loop: test-state.json still holds
            # statuses and attempts; keep the bad file for a person to look at.
            self.path.replace(self.path.with_suffix(".corrupt"))
            return WorkerState()

    def save(self, state: WorkerState) -> None:
        for rt in state.tasks.values():
            del rt.history[:-_HISTORY_KEEP]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Invariant 7: guidance, failure reports and history quote agents and checks.
        write_json_atomic(self.path, redact_obj(state.model_dump(mode="json")))
