from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infra.git import GitError, git
from loops.workspace import Workspace


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
    (ws.path / "b.txt").write_text("b\n")
    other = ws.commit_iteration("more work", keep="T-2").commit
    assert other and git(repo, "rev-parse", "refs/loops/tasks/l/T-2") == other
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


def agent_shell(ws: Workspace, script: str) -> subprocess.CompletedProcess[str]:
    """What an unsandboxed agent can do in its work tree: any shell, any git."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=ws.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_workspace_shares_no_refs_with_the_operator_repo(repo: Path) -> None:
    """Even unsandboxed, `git push . HEAD:main`, `update-ref`, `branch -f` from the work
    tree move refs of the loop's private git dir only, never the operator's."""
    main = git(repo, "rev-parse", "main")
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    assert (ws.path / ".git").read_text() == f"gitdir: {ws.git_dir}\n"
    assert not (repo / ".git" / "worktrees").exists()  # not a linked worktree
    proc = agent_shell(
        ws,
        "echo evil > evil.txt && git add evil.txt"
        " && git -c user.name=a -c user.email=a@b commit -qm evil"
        " && git push -q . HEAD:main; git update-ref refs/heads/main HEAD;"
        " git branch -f main HEAD; git push -q . HEAD:refs/heads/loop/other;"
        " git update-ref refs/loops/tasks/x/T HEAD; git log --oneline -1",
    )
    assert "evil" in proc.stdout, proc.stderr
    assert git(repo, "rev-parse", "main") == main
    assert git(repo, "branch", "--list", "loop/other") == ""
    assert git(repo, "for-each-ref", "refs/loops/") == ""
    # The harness commits on top of what the agent did, and the operator's repo gets
    # every object of it (the agent's own commit was written into the private dir).
    (ws.path / "more.txt").write_text("more\n")
    done = ws.commit_iteration("l: T iteration 1", keep="T")
    assert done.commit and git(repo, "rev-parse", "loop/l") == done.commit
    assert git(repo, "rev-parse", "refs/loops/tasks/l/T") == done.commit
    git(repo, "rev-list", "--objects", "loop/l")  # complete history, no missing object
    assert git(repo, "rev-parse", "main") == main


def test_harness_git_never_runs_what_the_agent_configured(repo: Path, tmp_path: Path) -> None:
    """A `.git` dir or private git config written by an unsandboxed agent (fsmonitor,
    hooks, gpg.program, filters) runs nothing when the harness commits, resets, merges."""
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    pwned = tmp_path / "pwned"
    pwned.mkdir()
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\ntouch "{pwned}/$(basename "$0")-$$"\ncat\n')
    evil.chmod(0o755)
    hooks = "".join(
        f'ln -s {evil} "$d/hooks/{hook}"; '
        for hook in ("pre-commit", "post-commit", "commit-msg", "post-checkout", "post-merge")
    )
    config = tmp_path / "evil.config"
    config.write_text(
        f"[core]\n\tfsmonitor = {evil}\n\thooksPath = hooks\n"
        f"[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = {evil}\n"
        f'[filter "x"]\n\tclean = {evil}\n\tsmudge = {evil}\n'
    )
    proc = agent_shell(
        ws,
        # the private dir the gitfile names, then a `.git` dir of the agent's own
        f'd=$(sed "s/^gitdir: //" .git) && mkdir -p "$d/hooks" && {hooks}'
        f'cat {config} >> "$d/config" && echo "* filter=x" > .gitattributes'
        f" && rm .git && mkdir -p .git && d=.git && mkdir -p .git/hooks && {hooks}"
        f"cat {config} > .git/config"
        # and a nested repository of its own, committed, with the same config
        " && git init -q sub && echo s > sub/s && git -C sub add s"
        " && git -C sub -c user.name=a -c user.email=a@b commit -qm s"
        f" && d=sub/.git && {hooks}cat {config} >> sub/.git/config",
    )
    assert proc.returncode == 0, proc.stderr
    (ws.path / "app.py").write_text("print('changed')\n")
    done = ws.commit_iteration("l: T iteration 1")
    assert done.commit and "app.py" in done.changed_files
    (ws.path / "sub" / "s").write_text("changed\n")  # a dirty nested repo
    assert ws.commit_iteration("l: T iteration 2").commit is None
    ws.reset_to(ws.main_head())
    ws.merge_main()
    ws.reset_to(done.commit)
    assert list(pwned.iterdir()) == []
    assert (ws.path / ".git").read_text() == f"gitdir: {ws.git_dir}\n"
    assert "fsmonitor" not in (ws.git_dir / "config").read_text()


def test_old_linked_worktree_is_replaced(repo: Path) -> None:
    """A work tree of the old layout (`git worktree` sharing refs) is unregistered and
    recreated on the loop's existing branch."""
    path = repo / ".loops" / "worktrees" / "l"
    git(repo, "worktree", "add", "-q", "-b", "loop/l", str(path), "main")
    (path / "kept.txt").write_text("kept\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "old layout work")
    sha = git(repo, "rev-parse", "loop/l")
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    assert ws.head() == sha and (ws.path / "kept.txt").exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    (ws.path / "next.txt").write_text("next\n")
    assert ws.commit_iteration("next").commit == git(repo, "rev-parse", "loop/l")


def test_push_publishes_the_loop_branch_from_the_operator_repo(repo: Path, tmp_path: Path) -> None:
    """Distributed mode: the loop branch goes to the shared remote, force-with-lease,
    from the operator's repo (its remotes), never from the work tree."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "fetch", "-q", "origin")
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    (ws.path / "a.txt").write_text("a\n")
    first = ws.commit_iteration("first").commit
    ws.push("origin")
    assert git(origin, "rev-parse", "refs/heads/loop/l") == first
    ws.reset_to(ws.main_head())  # a new task starts from main: the branch moves back
    (ws.path / "b.txt").write_text("b\n")
    second = ws.commit_iteration("second").commit
    ws.push("origin")
    assert git(origin, "rev-parse", "refs/heads/loop/l") == second


def test_a_broken_nested_repository_does_not_stop_the_commit(repo: Path) -> None:
    """An agent's `git init sub` with a config git cannot parse would fail `git add`;
    the harness commits everything else."""
    ws = Workspace(repo, "l", "main")
    ws.ensure()
    proc = agent_shell(
        ws, "git init -q sub && echo s > sub/s && printf '[core\\nbroken' > sub/.git/config"
    )
    assert proc.returncode == 0, proc.stderr
    (ws.path / "app.py").write_text("print('changed')\n")
    done = ws.commit_iteration("l: T iteration 1")
    assert done.changed_files == ["app.py"]
    ws.reset_to(ws.main_head())  # and the loop goes on, without the leftover
    assert ws.head() == ws.main_head() and not (ws.path / "sub").exists()
