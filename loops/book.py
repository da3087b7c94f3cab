"""The loop's task list as the worker sees it, whichever file format it came from.

`TaskBook` is the seam: a SPEC.yaml (ralph_loop) and a loop directory with
config.json + test-state.json (the coding-loops harness) both implement it. The book
owns the seed-visible state (status, attempts, lastResult) and its file; the worker
owns everything else (loops/runtime.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from events import Criterion
from loops.harness import FileStatus
from loops.sandbox import SandboxConfig

__all__ = ["FileStatus", "TaskBook", "TaskDef", "TaskRecord"]


@dataclass(frozen=True)
class TaskDef:
    """What a task asks for (the static part)."""

    id: str
    title: str
    description: str
    criteria: list[Criterion]
    instructions: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)  # "ID" or "other-loop/ID"
    priority: int = 0  # lower runs first; ties keep file order
    spec_content: str = ""


@dataclass(frozen=True)
class TaskRecord:
    """A task's seed-visible state."""

    status: FileStatus
    attempts: int = 0
    last_result: str | None = None


class TaskBook(Protocol):
    """A loop's tasks and their persisted, seed-compatible state."""

    loop: str  # the loop's name (directory name, or the spec's stem)
    display_name: str
    goal: str
    context: str
    instructions: list[str]
    max_attempts: int
    max_iterations: int | None  # counted iterations for the whole loop (ralph's -n)
    attempt_iterations: int  # counted iterations per attempt before the attempt fails
    auto_continue_delay: float
    agent: str | None
    model: str | None
    state_dir: Path  # where health.json and logs/transcripts go
    state_path: Path  # the task state file (test-state.json) this book reads and writes
    sandbox: SandboxConfig  # the agent's isolation (config.json's `sandbox`)
    agent_timeout_s: float | None  # one agent run's limit (None: the worker's default)
    account: str | None  # config.json's `account` (loops naming one share usage windows)

    def tasks(self) -> list[TaskDef]: ...

    def record(self, task_id: str) -> TaskRecord: ...

    def statuses(self) -> dict[str, FileStatus]:
        """Every task's status, without building the tasks (called on every turn)."""

    def update(
        self,
        task_id: str,
        *,
        status: FileStatus | None = None,
        attempts: int | None = None,
        last_result: str | None = None,
    ) -> None:
        """Change one task's state and write the file atomically."""

    def reload(self) -> list[str]:
        """Take up hand edits of the state file. Returns the problems of an invalid
        edit (the edit is then ignored and the last good state kept), else []."""
