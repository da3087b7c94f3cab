"""The one git layer: its timeout, environment and identity policies, on real repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.git import GitError, git, git_path, run_git
from infra.process import pid_alive


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def test_a_command_that_runs_out_of_time_is_killed_with_its_children_and_says_so(
    repo: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    slow = f"alias.slow=!echo $$ > {pid_file}; exec sleep 30"
    with pytest.raises(GitError, match=r"timed out after 0\.5s") as caught:
        run_git(repo, "slow", options=("-c", slow), timeout=0.5)
    assert caught.value.returncode is None
    # The shell git started for the alias (now `sleep`) went with it: nothing of the
    # command outlives the timeout (it would hold git's pipes, and the call, open).
    child = int(pid_file.read_text())
    assert not pid_alive(child), f"git's child {child} outlived the timeout"


def test_a_failure_names_the_command_and_gits_last_line(repo: Path) -> None:
    with pytest.raises(GitError, match=r"^git rev-parse nope: .+") as caught:
        git(repo, "rev-parse", "nope")
    assert caught.value.returncode == 128
    assert "unknown revision" in caught.value.output
    assert run_git(repo, "rev-parse", "nope", check=False).returncode == 128


def test_variables_that_redirect_git_are_stripped(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert Path(git(repo, "rev-parse", "--show-toplevel")).resolve() == repo.resolve()
    assert git_path(repo, "--git-common-dir") == (repo / ".git").resolve()
    # A caller that redirects git on purpose still can.
    out = run_git(repo, "rev-parse", "--git-dir", env={"GIT_DIR": str(other / ".git")})
    assert Path(out.stdout) == other / ".git"


def test_commits_are_by_coding_loops_unless_the_environment_names_someone(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no global identity
    for name in ("AUTHOR", "COMMITTER"):
        monkeypatch.delenv(f"GIT_{name}_NAME", raising=False)
        monkeypatch.delenv(f"GIT_{name}_EMAIL", raising=False)
    git(repo, "commit", "-q", "--allow-empty", "-m", "by the harness")
    assert git(repo, "log", "-1", "--format=%an <%ae> %cn") == (
        "coding-loops <loops@localhost> coding-loops"
    )
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada")
    git(repo, "commit", "-q", "--allow-empty", "-m", "by a person")
    assert git(repo, "log", "-1", "--format=%an %cn") == "Ada coding-loops"


def test_input_goes_to_stdin(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", "--stdin", input=f"update refs/heads/copy {head}\n")
    assert git(repo, "rev-parse", "refs/heads/copy") == head


def test_a_missing_directory_fails_rather_than_running_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(GitError):
        git(tmp_path / "missing", "status")
