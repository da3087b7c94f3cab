"""The merge queue: conflicts go back to the loop, semantic breakage never reaches main,
and a merge manager killed mid-merge finishes the merge exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import BusSettings, RedisBus, connect
from events import Decision, EscalationKind, EscalationRaised, MergeConflicted
from infra.git import git, run_git
from tests.conftest import require_real_redis, wait_until
from tests.gates.conftest import APP, PYTEST, TASKS, Project, make_project, script
from tests.gates.test_flow import MUL, SUB, answer

ROOT = Path(__file__).resolve().parents[2]
BOTH = APP + "\n\ndef mul(a, b):\n    return a * b\n\n\ndef sub(a, b):\n    return a - b\n"


def merges_of(project: Project, commit: str) -> int:
    """How many commits on main carry `commit`'s work (the queue squashes each task)."""
    out = git(project.origin, "log", "--format=%H", f"--grep=Loops-Commit: {commit}", "main")
    return len(out.split())


def test_two_loops_on_one_file_one_merges_the_other_resolves(project: Project) -> None:
    project.start()
    a, b = project.loop("a"), project.loop("b")
    a_commit = a.write({"app.py": MUL}, "mul")
    b_commit = b.write({"app.py": SUB}, "sub")
    a.claim("mul", a_commit)
    b.claim("sub", b_commit)
    project.pump()

    assert len(project.events("verification.passed")) == 2
    (conflict,) = project.events("merge.conflicted")
    assert isinstance(conflict, MergeConflicted)
    assert conflict.task_id == "sub" and conflict.files == ["app.py"] and conflict.tries == 1
    assert conflict.loop == "b"
    assert "def mul" in project.main_file("app.py")
    assert "def sub" not in project.main_file("app.py")

    # The loop resolves it on its branch: a new commit, a new claim.
    git(b.path, "fetch", "-q", "origin")
    assert run_git(b.path, "merge", "origin/main", check=False).returncode != 0
    resolved = b.write({"app.py": BOTH}, "merge main, keep mul and sub")
    b.claim("sub", resolved)
    project.pump()
    assert [e.task_id for e in project.events("merge.completed")] == ["mul", "sub"]  # type: ignore[attr-defined]
    assert project.main_file("app.py").strip() == BOTH.strip()
    project.assert_main_verified()


def test_checks_failing_on_the_merged_tree_keep_main_green(project: Project) -> None:
    project.start(merge={"max_conflicts": 2})
    a = project.loop("a")
    broken = MUL.replace("return a + b", "return a - b")  # passes mul's tests, breaks add
    commit = a.write({"app.py": broken}, "mul, and a regression")
    seed = project.main()
    a.claim("mul", commit)
    project.pump()
    assert len(project.events("verification.passed")) == 1
    (conflict,) = project.events("merge.conflicted")
    assert isinstance(conflict, MergeConflicted)
    assert conflict.files == [] and "checks failed on the merged tree" in conflict.reason
    assert project.main() == seed

    again = a.write({"NOTES.md": "still broken\n"}, "retry")
    a.claim("mul", again)
    project.pump()
    tries = [e.tries for e in project.events("merge.conflicted")]  # type: ignore[attr-defined]
    assert tries == [1, 2]
    (raised,) = project.events("escalation.raised")
    assert isinstance(raised, EscalationRaised) and raised.kind == EscalationKind.QUESTION
    assert raised.task_id == "mul" and project.main() == seed

    answer(project, raised.escalation_id, Decision.RETRY)  # a person: try again
    a.claim("mul", a.write({"NOTES.md": "broken again\n"}, "retry"))
    project.pump()
    assert [e.tries for e in project.events("merge.conflicted")][-1] == 1  # type: ignore[attr-defined]
    assert project.main() == seed


@pytest.fixture
def real_bus() -> Iterator[RedisBus]:
    url = require_real_redis()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    client = connect(url)
    bus = RedisBus(client, settings=BusSettings.from_dsn(url, prefix=prefix))
    try:
        yield bus
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def spawn(cfg: dict[str, object]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.gates.role_child", json.dumps(cfg)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes], stop_file: Path) -> None:
    stop_file.touch()
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            kill(proc)


@pytest.fixture
def real_project(tmp_path: Path, real_bus: RedisBus) -> Iterator[Project]:
    project = make_project(tmp_path, real_bus)
    try:
        yield project
    finally:
        project.close()


def test_merge_manager_killed_mid_merge_merges_exactly_once(
    tmp_path: Path, real_project: Project, real_bus: RedisBus
) -> None:
    project = real_project
    project.start()
    a, b = project.loop("a"), project.loop("b")
    # b lands first, so a's merge is a real merge commit built by the queue.
    sub = {"sub.py": "def sub(a, b):\n    return a - b\n", "app.py": "from sub import sub\n" + APP}
    b.claim("sub", b.write(sub, "sub"))
    project.pump()
    assert len(project.events("merge.completed")) == 1
    main_before = project.main()

    project._subs.pop()  # the in-process queue stops here: only the child merges from now
    a_commit = a.write({"app.py": MUL}, "mul")
    a.claim("mul", a_commit)
    project.pump()
    assert len(project.events("verification.passed")) == 2

    hook, stop_file = tmp_path / "hook", tmp_path / "stop"
    cfg: dict[str, object] = {
        "role": "merge",
        "url": require_real_redis(),
        "prefix": real_bus.prefix,
        "repo": str(project.clone("merge-child")),
        "test_command": project.test_command,
        "stop": str(stop_file),
    }
    child = spawn({**cfg, "hook": str(hook)})
    try:
        merged = wait_until(lambda: hook.exists() and hook.read_text(), timeout=60)
    finally:
        kill(child)
    assert project.main() == main_before  # killed after building the merge, before main moved
    assert merged in project.marker.read_text()

    child = spawn(cfg)  # restarted: the pending verification.passed is reclaimed
    try:
        done = wait_until(lambda: project.events("merge.completed", task_id="mul"), timeout=60)
    finally:
        stop(child, stop_file)
    assert len({e.id for e in done}) == 1
    assert project.events("merge.conflicted") == []
    assert merges_of(project, a_commit) == 1
    assert "def mul" in project.main_file("app.py")
    project.assert_main_verified()


def test_gate_killed_mid_check_verifies_after_restart(
    tmp_path: Path, real_bus: RedisBus, request: pytest.FixtureRequest
) -> None:
    # The first run of the check notes its pid and hangs; a second run passes.
    started = tmp_path / "started"
    slow = (
        f"if [ -f {started} ]; then {PYTEST} tests/test_mul.py; "
        f"else echo $$ > {started}.tmp && mv {started}.tmp {started}; "
        "while true; do sleep 0.05; done; fi"
    )
    tasks = {**TASKS, "a/slow": [script("mul, slowly", slow)]}
    project = make_project(tmp_path, real_bus, tasks=tasks)
    request.addfinalizer(project.close)
    a = project.loop("a")
    a.claim("slow", a.write({"app.py": MUL}, "mul"))
    stop_file = tmp_path / "stop"
    cfg: dict[str, object] = {
        "role": "gate",
        "url": require_real_redis(),
        "prefix": real_bus.prefix,
        "repo": str(project.clone("gate-child")),
        "protected": ["tasks.json"],
        "stop": str(stop_file),
    }
    child = spawn(cfg)
    try:
        wait_until(started.exists, timeout=60)
    finally:
        kill(child)
    orphan = int(started.read_text())  # the check outlived its gate (its own session)
    assert alive(orphan)
    assert project.events("verification.passed") == []
    child = spawn(cfg)
    try:
        passed = wait_until(lambda: project.events("verification.passed"), timeout=60)
    finally:
        stop(child, stop_file)
    assert len({e.id for e in passed}) == 1
    assert project.events("verification.failed") == []
    wait_until(lambda: not alive(orphan), timeout=10)  # killed when its worktree was reused


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
