"""A tiny project in real git repositories: a bare origin, a clone per loop, one for
the gate and one for the merge manager. Checks are real pytest runs.

The repository's test command appends the commit it ran on to `marker.log`; the
origin keeps a reflog of main, so a test can assert that every commit main ever
pointed at had its checks run on exactly that tree (invariant 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from bus import BusSettings, RedisBus
from events import (
    Criterion,
    Event,
    NaturalCheck,
    Role,
    ScriptCheck,
    Source,
    TaskClaimed,
)
from gates import (
    BatchMergeQueue,
    GateSettings,
    Judge,
    MergeQueue,
    MergeSettings,
    VerificationGate,
)
from gates.gitutil import ensure_loop_branch, remove_scratch
from gates.settings import DEFAULT_PROTECTED
from infra.git import git
from infra.store import Store

PY = sys.executable
# Plugin autoload (hypothesis) would double the cost of every check run.
PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {PY} -m pytest -q -p no:cacheprovider"

APP = "def add(a, b):\n    return a + b\n"
TEST_BASE = "from app import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_MUL = "from app import mul\n\n\ndef test_mul():\n    assert mul(3, 4) == 12\n"
TEST_SUB = "from app import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n"


def load_tasks(root: Path, loop: str, task_id: str) -> list[Criterion]:
    """The test's `CriteriaLoader`: `tasks.json` maps `loop/task` to SPEC-style criteria."""
    tasks = json.loads((root / "tasks.json").read_text())
    return [Criterion.model_validate(c) for c in tasks.get(f"{loop}/{task_id}", [])]


def script(criterion: str, run: str, timeout_s: float | None = None) -> dict[str, object]:
    return Criterion(
        criterion=criterion, check=ScriptCheck(run=run, timeout_s=timeout_s)
    ).model_dump()


def natural(criterion: str, description: str) -> dict[str, object]:
    return Criterion(criterion=criterion, check=NaturalCheck(description=description)).model_dump()


TASKS = {
    "a/mul": [script("tests for mul pass", f"{PYTEST} tests/test_mul.py")],
    "b/sub": [script("tests for sub pass", f"{PYTEST} tests/test_sub.py")],
    "a/hang": [script("finishes", "sleep 60 & sleep 60; wait", timeout_s=1.0)],
    "c/notes": [script("notes exist", "test -f NOTES.md")],
    "a/doc": [natural("the README explains mul", "README.md documents the mul function")],
}


def sh_git(repo: Path, *args: str) -> str:
    return git(repo, *args)


@dataclass
class Loop:
    """A loop's clone: commits on `loop/<name>` and pushes to origin."""

    name: str
    path: Path
    project: Project
    attempt: int = 0

    def write(self, files: dict[str, str], message: str) -> str:
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "-m", message)
        git(self.path, "push", "-q", "origin", f"loop/{self.name}")
        return git(self.path, "rev-parse", "HEAD")

    def claim(self, task_id: str, commit: str) -> TaskClaimed:
        self.attempt += 1
        event = TaskClaimed(
            source=Source(role=Role.WORKER, instance=f"test:{self.name}"),
            loop=self.name,
            correlation_id=uuid.uuid4().hex,
            task_id=task_id,
            attempt=self.attempt,
            commit=commit,
            branch=f"loop/{self.name}",
            claim="<promise>DONE</promise>",
        )
        self.project.bus.publish(event)
        return event


@dataclass
class Project:
    root: Path
    origin: Path
    marker: Path
    bus: RedisBus
    store: Store = field(default_factory=Store.memory)
    gate: VerificationGate | None = None
    merge: MergeQueue | None = None
    judge: Judge | None = None
    clones: list[Path] = field(default_factory=list)

    def close(self) -> None:
        """Remove the scratch worktrees the gate and queue kept in the temp directory."""
        for path in self.clones:
            remove_scratch(path)

    @property
    def test_command(self) -> str:
        return f"{PYTEST} tests/test_base.py && git rev-parse HEAD >> {self.marker}"

    def clone(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(["git", "clone", "-q", str(self.origin), str(path)], check=True, timeout=60)
        git(path, "config", "user.name", name)
        git(path, "config", "user.email", f"{name}@example.invalid")
        self.clones.append(path)
        return path

    def loop(self, name: str) -> Loop:
        path = self.clone(f"loop-{name}")
        branch = ensure_loop_branch(path, name)
        git(path, "checkout", "-q", branch)
        return Loop(name, path, self)

    def start(
        self, merge: dict[str, Any] | None = None, batch: bool = False, **gate_overrides: Any
    ) -> None:
        """Build the gate and the merge queue (a batching one if `batch`) on their own clones."""
        gate_overrides.setdefault("protected", (*DEFAULT_PROTECTED, "tasks.json"))
        gate_settings = GateSettings(repo=self.clone("gate"), **gate_overrides)
        self.gate = VerificationGate(
            self.bus, gate_settings, loader=load_tasks, judge=self.judge, store=self.store
        )
        merge = dict(merge or {})
        merge.setdefault("protected", gate_settings.protected)
        merge.setdefault("default_check", gate_settings.default_check)
        merge.setdefault("test_command", self.test_command)
        merge_settings = MergeSettings(repo=self.clone("merge"), **merge)
        queue_cls = BatchMergeQueue if batch else MergeQueue
        self.merge = queue_cls(self.bus, merge_settings, loader=load_tasks, store=self.store)
        self._subs = [self.gate.subscribe("gate-1"), self.merge.subscribe("merge-1")]

    def pump(self) -> int:
        """Let the gate and the merge queue handle everything published so far."""
        total = 0
        while True:
            n = sum(sub.drain() for sub in self._subs)
            total += n
            if n == 0:
                return total

    def events(self, etype: str | None = None, task_id: str | None = None) -> list[Event]:
        found = [e for _, e in self.bus.replay(types=[etype] if etype else None)]
        return [e for e in found if task_id is None or getattr(e, "task_id", None) == task_id]

    def main(self) -> str:
        return git(self.origin, "rev-parse", "refs/heads/main")

    def main_file(self, rel: str) -> str:
        return git(self.origin, "show", f"main:{rel}")

    def assert_main_verified(self) -> None:
        """Invariant 3, per landing: every commit main pointed at (after the seed) ran the
        test command on its tree; a commit of main's history that main never pointed at
        was stacked in a batch (`Loops-Batch: <id>`) and landed under a later commit of
        the same batch that main did point at (the tree that was checked)."""
        tips = git(self.origin, "reflog", "show", "--format=%H", "refs/heads/main").split()
        checked = set(self.marker.read_text().split()) if self.marker.exists() else set()
        unverified = [t for t in tips[:-1] if t not in checked]  # the last one is the seed
        assert not unverified, f"main held commits never checked on their tree: {unverified}"
        history = git(
            self.origin, "rev-list", "--reverse", "--first-parent", f"{tips[-1]}..main"
        ).split()
        landings = set(tips[:-1])
        for i, commit in enumerate(history):
            if commit in landings:
                continue
            batch = self.batch_of(commit)
            assert batch, f"{commit} is on main, main never pointed at it, and no batch has it"
            tips_after = [c for c in history[i + 1 :] if c in landings]
            assert tips_after and self.batch_of(tips_after[0]) == batch, (
                f"{commit} (batch {batch}) did not land under a checked tip of its batch"
            )

    def batch_of(self, commit: str) -> str | None:
        """The `Loops-Batch:` trailer of `commit` (None if it was not stacked)."""
        body = git(self.origin, "log", "-1", "--format=%B", commit)
        found = [ln.split(": ", 1)[1] for ln in body.splitlines() if ln.startswith("Loops-Batch: ")]
        return found[0] if found else None


def make_project(
    tmp_path: Path,
    bus: RedisBus,
    tasks: dict[str, object] | None = None,
    files: dict[str, str] | None = None,
) -> Project:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    git(origin, "config", "core.logAllRefUpdates", "always")
    seed = tmp_path / "seed"
    subprocess.run(["git", "init", "-q", "-b", "main", str(seed)], check=True)
    files = {
        "app.py": APP,
        "tests/test_base.py": TEST_BASE,
        "tests/test_mul.py": TEST_MUL,
        "tests/test_sub.py": TEST_SUB,
        "tasks.json": json.dumps(tasks or TASKS, indent=1),
        "pytest.ini": "[pytest]\n",
        ".gitignore": "__pycache__/\n.pytest_cache/\n",
        "README.md": "# tiny\n",
        **(files or {}),
    }
    for rel, text in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text)
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=seed", "-c", "user.email=s@x", "commit", "-q", "-m", "seed")
    git(seed, "remote", "add", "origin", str(origin))
    git(seed, "push", "-q", "origin", "main")
    return Project(root=tmp_path, origin=origin, marker=tmp_path / "marker.log", bus=bus)


@pytest.fixture
def fake_bus() -> Iterator[RedisBus]:
    """A RedisBus on in-process fakeredis under its own prefix (the git work dominates
    these tests; the bus contract itself is tested on both backends in tests/bus)."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)), protocol=2)
    try:
        yield RedisBus(client, settings=BusSettings(prefix=f"test-{uuid.uuid4().hex[:10]}"))
    finally:
        client.close()


@pytest.fixture
def project(tmp_path: Path, fake_bus: RedisBus) -> Iterator[Project]:
    """A project; whatever the test did, main must end up holding only commits whose
    checks ran on their tree (invariant 3)."""
    project = make_project(tmp_path, fake_bus)
    try:
        yield project
        project.assert_main_verified()
    finally:
        project.close()
