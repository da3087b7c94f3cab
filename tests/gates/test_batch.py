"""Batch merging: verified tasks tested together land as one checked commit; a failing
batch is bisected so the good tasks still land and only the bad one is sent back."""

from __future__ import annotations

import pytest

from events import MergeConflicted
from gates import BatchMergeQueue
from gates.gitutil import git
from tests.gates.conftest import APP, Project, load_tasks
from tests.gates.test_flow import MUL

SUB = {"sub.py": "def sub(a, b):\n    return a - b\n", "app.py": "from sub import sub\n" + APP}


def test_a_batch_lands_as_one_checked_commit(project: Project) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    b.claim("sub", b.write(SUB, "sub"))
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    project.pump()

    done = project.events("merge.completed")
    assert sorted(e.task_id for e in done) == ["mul", "notes", "sub"]  # type: ignore[attr-defined]
    assert {e.merged_commit for e in done} == {project.main()}  # type: ignore[attr-defined]
    assert git(project.origin, "rev-list", "--count", "main") == "2"  # seed + one batch
    assert project.marker.read_text().split() == [project.main()]  # tests ran once
    body = git(project.origin, "log", "-1", "--format=%B", "main")
    assert body.count("Loops-Commit:") == 3
    assert [e.position for e in project.events("merge.queued")] == [0, 1, 2]  # type: ignore[attr-defined]
    project.assert_main_verified()


def test_a_failing_batch_is_bisected(project: Project) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    b.claim("sub", b.write(SUB, "sub"))
    # c's change breaks the other tests (a package `app/` hides app.py) but not its own
    c.claim("notes", c.write({"NOTES.md": "n\n", "app/__init__.py": ""}, "notes"))
    project.pump()

    assert sorted(e.task_id for e in project.events("merge.completed")) == ["mul", "sub"]  # type: ignore[attr-defined]
    (conflict,) = project.events("merge.conflicted")
    assert isinstance(conflict, MergeConflicted) and conflict.task_id == "notes"
    assert "checks failed on the merged tree" in conflict.reason
    assert "def mul" in project.main_file("app.py") and "NOTES.md" not in git(
        project.origin, "ls-tree", "--name-only", "main"
    )
    project.assert_main_verified()


def test_a_conflict_inside_a_batch_leaves_only_that_task_out(project: Project) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    a, b, c = project.loop("a"), project.loop("b"), project.loop("c")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    b.claim("sub", b.write({"app.py": APP + "\n\ndef sub(a, b):\n    return a - b\n"}, "sub"))
    c.claim("notes", c.write({"NOTES.md": "notes\n"}, "notes"))
    project.pump()
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["mul", "notes"]  # type: ignore[attr-defined]
    (conflict,) = project.events("merge.conflicted")
    assert conflict.task_id == "sub" and conflict.files == ["app.py"]  # type: ignore[attr-defined]
    assert git(project.origin, "rev-list", "--count", "main") == "2"
    project.assert_main_verified()


class Crash(Exception):
    """Stands for the process dying just before main moves."""


def test_a_batch_interrupted_before_main_moves_lands_once_after_restart(
    project: Project,
) -> None:
    project.start(merge={"batch_size": 4}, batch=True)
    assert isinstance(project.merge, BatchMergeQueue)

    def die(merged: str) -> None:
        raise Crash(merged)

    project.merge.before_main_moves = die
    a, b = project.loop("a"), project.loop("b")
    a_commit = a.write({"app.py": MUL}, "mul")
    a.claim("mul", a_commit)
    b.claim("sub", b.write(SUB, "sub"))
    seed = project.main()
    with pytest.raises(Crash):
        project.pump()
    assert project.main() == seed and project.events("merge.completed") == []

    # A new process: same durable store, same bus; the queued tasks are still queued.
    restarted = BatchMergeQueue(
        project.bus, project.merge.settings, loader=load_tasks, store=project.store
    )
    assert [vp.task_id for vp in restarted.pending()] == ["mul", "sub"]
    assert restarted.flush() == 2
    assert sorted(e.task_id for e in project.events("merge.completed")) == ["mul", "sub"]  # type: ignore[attr-defined]
    assert git(project.origin, "rev-list", "--count", "main") == "2"
    assert restarted.pending() == [] and restarted.flush() == 0
