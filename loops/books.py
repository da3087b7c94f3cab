"""The two `TaskBook`s: a harness loop (config.json + test-state.json) and a SPEC.yaml.

Both keep their state in a test-state.json (for a SPEC.yaml, under the project's
`.loops/` directory), so `jq '.summary'` works the same for either. The file is an
input too: a valid hand edit is taken up at the next task choice; an invalid one is
reported and ignored, and the last good state is kept.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from events import ValidationFailed
from infra.files import load_settled
from loops.book import FileStatus, TaskDef, TaskRecord
from loops.harness import LoopState, TaskEntry, load_state, save_state
from loops.names import safe_component
from loops.project import Loop
from loops.sandbox import SandboxConfig
from loops.spec import Spec

DEFAULT_ATTEMPT_ITERATIONS = 10
SPEC_CONTENT_CAP = 8000
UNLIMITED_ATTEMPTS = 2**31 - 1


class StateFileBook:
    """Shared part: a LoopState persisted in a test-state.json, with hand-edit reload."""

    loop: str
    display_name: str
    goal: str = ""
    context: str = ""
    instructions: list[str]
    max_attempts: int = 3
    max_iterations: int | None = None
    attempt_iterations: int = DEFAULT_ATTEMPT_ITERATIONS
    auto_continue_delay: float = 0.0
    agent: str | None = None
    model: str | None = None
    state_dir: Path
    sandbox: SandboxConfig = SandboxConfig()
    agent_timeout_s: float | None = None
    account: str | None = None

    def __init__(self, state_path: Path, initial: LoopState) -> None:
        self.state_path = state_path
        self.instructions = []
        state_path.parent.mkdir(parents=True, exist_ok=True)
        if state_path.exists():
            self._state = load_settled(load_state, state_path)
        else:
            self._state = save_state(state_path, initial)
        self._stamp = self._file_stamp()
        self._rejected: tuple[tuple[int, int] | None, list[str]] | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def entries(self) -> tuple[TaskEntry, ...]:
        return self._state.tests

    def statuses(self) -> dict[str, FileStatus]:
        """Each task's status, cheaply (no criteria or spec files read): the tasks the
        harness runs, not the ones a person verifies by hand (`automatable: false`)."""
        return {e.id: e.status for e in self._state.tests if e.automatable}

    def record(self, task_id: str) -> TaskRecord:
        try:
            entry = self._state.task(task_id)
        except KeyError:
            return TaskRecord(FileStatus.PENDING)
        return TaskRecord(entry.status, entry.attempts, entry.last_result)

    def update(
        self,
        task_id: str,
        *,
        status: FileStatus | None = None,
        attempts: int | None = None,
        last_result: str | None = None,
    ) -> None:
        self.reload()  # take up a hand edit before writing over the file
        try:
            entry = self._state.task(task_id)
        except KeyError:
            entry = TaskEntry(id=task_id)
        changes: dict[str, object] = {}
        if status is not None:
            changes["status"] = status
        if attempts is not None:
            changes["attempts"] = attempts
        if last_result is not None:
            changes["last_result"] = last_result
        self._state = save_state(
            self.state_path, self._state.with_task(entry.model_copy(update=changes))
        )
        self._stamp = self._file_stamp()

    def reload(self) -> list[str]:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return []
        if self._rejected is not None and self._rejected[0] == stamp:
            return self._rejected[1]  # the same bad edit: not read (and waited for) again
        try:
            state = load_settled(load_state, self.state_path)
        except ValidationFailed as exc:
            self._rejected = (self._file_stamp(), exc.problems)
            return exc.problems
        self._state = self._adopt(state)
        self._stamp = self._file_stamp()
        self._rejected = None
        return []

    def _adopt(self, state: LoopState) -> LoopState:
        return state


class HarnessBook(StateFileBook):
    """A loop directory of the coding-loops harness (seed layout)."""

    def __init__(self, loop: Loop, *, max_iterations: int | None = None) -> None:
        self.spec_loop = loop
        self.max_iterations = max_iterations  # the harness's --max-iterations (per run)
        self.loop = loop.name
        self.config = loop.config
        self.display_name = loop.display_name
        self.state_dir = loop.specs_dir
        self.max_attempts = loop.config.max_attempts
        self.auto_continue_delay = loop.config.auto_continue_delay
        self.agent = loop.config.agent
        self.model = loop.config.model
        self.priority = loop.config.priority
        self.sandbox = loop.config.sandbox
        self.agent_timeout_s = loop.config.agent_timeout_s
        self.account = loop.config.account
        super().__init__(loop.state_path, loop.state)

    def tasks(self) -> list[TaskDef]:
        # Criteria follow the current state file (a hand edit may add a task).
        current = replace(self.spec_loop, state=self._state)
        return [
            TaskDef(
                id=e.id,
                title=e.title or e.notes or e.id,
                description=e.description or e.notes or f"Implement {e.id}.",
                criteria=current.criteria(e.id),
                depends_on=e.dependencies,
                priority=e.priority if e.priority is not None else 0,
                spec_content=current.spec_content(e.id, SPEC_CONTENT_CAP),
            )
            for e in self.entries()
            if e.automatable
        ]


class SpecBook(StateFileBook):
    """A ralph_loop SPEC.yaml; state in `<repo>/.loops/state/<stem>.test-state.json`."""

    def __init__(self, spec: Spec, spec_path: Path, state_dir: Path, max_iterations: int) -> None:
        self.spec = spec
        self.loop = _loop_name(spec_path)
        self.display_name = spec.goal
        self.goal = spec.goal
        self.context = spec.context
        self.state_dir = state_dir
        self.max_iterations = max_iterations
        self.attempt_iterations = max_iterations
        # ralph_loop has one budget, -n per run: a false claim costs an iteration, and
        # running out of iterations (not of attempts) is what ends the run. Attempts (the
        # failed ones, as in test-state.json) are kept and shown, never a limit: a rerun
        # always goes on.
        self.max_attempts = UNLIMITED_ATTEMPTS
        initial = LoopState(tests=tuple(TaskEntry(id=t.id, title=t.title) for t in spec.tasks))
        super().__init__(state_dir / f"{self.loop}.test-state.json", initial)
        self.instructions = list(spec.instructions)
        self._state = self._adopt(self._state)

    def _adopt(self, state: LoopState) -> LoopState:
        # Tasks come from the spec; the state file only carries their progress.
        known = {e.id for e in state.tests}
        missing = [TaskEntry(id=t.id, title=t.title) for t in self.spec.tasks if t.id not in known]
        for entry in missing:
            state = state.with_task(entry)
        return state

    def tasks(self) -> list[TaskDef]:
        return [
            TaskDef(
                id=t.id,
                title=t.title,
                description=t.description,
                criteria=list(t.acceptance_criteria),
                instructions=list(t.instructions),
            )
            for t in self.spec.tasks
        ]


def _loop_name(spec_path: Path) -> str:
    """The spec's stem, lower-cased, safe in a branch name (`SPEC.yaml` -> `spec`)."""
    name = safe_component(spec_path.stem.lower())
    return "spec" if name == "x" and spec_path.stem.lower() != "x" else name
