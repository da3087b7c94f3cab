from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loops.workspace import GitError, Workspace, git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("print('hi')\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def test_worktree_on_loop_branch_commits_each_iteration(repo: Path) -> None:
    ws = Workspace(repo, "loop-1", "main")
    ws.ensure()
    ws.ensure()  # idempotent
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD") == "loop/loop-1"
    assert ws.commit_iteration("nothing").commit is None
    (ws.path / "app.py").write_text("print('hello')\nprint(2)\n")
    (ws.path / "new.py").write_text("x = 1\n")
    done = ws.commit_iteration("loop-1: T-1 iteration 1")
    assert done.commit == ws.head()
    assert sorted(done.changed_files) == ["app.py", "new.py"]
    assert done.diff_stat.files == 2 and done.diff_stat.insertions == 3
    assert ws.unmerged_commits() == 1
    # The state dir never shows up in the user's status.
    assert ".loops" not in git(repo, "status", "--porcelain")


def test_reset_to_switches_task_lines_without_losing_work(repo: Path) -> None:
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    (ws.path / "a.txt").write_text("a\n")
    sha = ws.commit_iteration("work").commit
    assert sha
    ws.keep("T-1", sha)
    (ws.path / "dirty.txt").write_text("uncommitted\n")
    ws.reset_to(ws.main_head())
    assert ws.head() == ws.main_head()
    assert not (ws.path / "dirty.txt").exists() and not (ws.path / "a.txt").exists()
    assert git(repo, "rev-parse", "refs/loops/tasks/l/T-1") == sha
    ws.reset_to(sha)
    assert (ws.path / "a.txt").read_text() == "a\n"


def test_merge_main_reports_conflicts(repo: Path) -> None:
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    (ws.path / "app.py").write_text("branch side\n")
    ws.commit_iteration("branch")
    (repo / "app.py").write_text("main side\n")
    git(repo, "commit", "-qam", "main moves")
    assert ws.merge_main() == ["app.py"]
    (ws.path / "app.py").write_text("resolved\n")
    done = ws.commit_iteration("resolve")
    assert done.commit is not None
    assert git(ws.path, "merge-base", "--is-ancestor", ws.main_head(), "HEAD", check=False) == ""


def test_git_errors_are_project_errors(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        git(tmp_path, "status")
    assert subprocess.run(["git", "--version"], capture_output=True).returncode == 0
