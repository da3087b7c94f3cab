"""A loop's git workspace: its branch `loop/<name>` in a worktree of its own.

The agent runs in the worktree; after each iteration the worker commits whatever the
agent changed, so a crash loses at most the iteration in flight. Every git call has a
timeout.
"""

from __future__ import annotations

import fcntl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from events import DiffStat, LoopsError

GIT_TIMEOUT_S = 60.0
_IDENTITY = ["-c", "user.name=coding-loops", "-c", "user.email=loops@localhost"]


class GitError(LoopsError):
    """Raised when a git command fails or times out."""

    def __init__(self, args: list[str], detail: str) -> None:
        super().__init__(f"git {' '.join(args)}: {detail}")
        self.args_ = args
        self.detail = detail


def git(cwd: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT_S) -> str:
    """Run git in `cwd`; returns stdout (stripped). Raises GitError on failure."""
    try:
        proc = subprocess.run(
            ["git", *_IDENTITY, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(list(args), f"timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise GitError(list(args), lines[-1] if lines else f"exit {proc.returncode}")
    return proc.stdout.strip()


def repo_root(path: Path) -> Path:
    """The top of the git work tree that contains `path`."""
    return Path(git(path, "rev-parse", "--show-toplevel"))


def current_branch(repo: Path) -> str:
    return git(repo, "rev-parse", "--abbrev-ref", "HEAD")


@dataclass(frozen=True)
class IterationCommit:
    """What one iteration changed, as committed on the loop's branch."""

    commit: str | None  # None when the agent changed nothing
    changed_files: list[str]
    diff_stat: DiffStat


class Workspace:
    """The worktree of one loop, on branch `loop/<name>`, inside the project repo."""

    def __init__(self, repo: Path, loop: str, main_branch: str, root: Path | None = None) -> None:
        self.repo = repo
        self.loop = loop
        self.main_branch = main_branch
        self.branch = f"loop/{loop}"
        self.path = (root or repo / ".loops" / "worktrees") / loop
        self._clean_at: str | None = None  # HEAD when we last left the worktree clean
        self._git_dir: Path | None = None

    # ------------------------------------------------------------------ setup
    def ensure(self) -> None:
        """Create the branch (from main) and the worktree if they do not exist yet."""
        _exclude_state_dir(self.repo)
        if (self.path / ".git").exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Loops start together (threads of `loops up`, or worker processes on one repo):
        # git's worktree bookkeeping is not safe against a concurrent prune.
        with open(self.path.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                git(self.repo, "worktree", "prune")
                if bool(git(self.repo, "branch", "--list", self.branch)):
                    git(self.repo, "worktree", "add", str(self.path), self.branch)
                else:
                    git(
                        self.repo,
                        "worktree",
                        "add",
                        "-b",
                        self.branch,
                        str(self.path),
                        self.main_branch,
                    )
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def main_head(self) -> str:
        return git(self.repo, "rev-parse", self.main_branch)

    def unmerged_commits(self) -> int:
        """Commits on the loop branch that main does not have."""
        return int(git(self.path, "rev-list", "--count", f"{self.main_branch}..HEAD") or 0)

    def reset_to(self, commit: str) -> None:
        """Point the loop branch at `commit` (main for a fresh task, the task's own last
        commit for a resumed one), discarding uncommitted leftovers of a crash."""
        if self._clean_at == commit:
            return  # we committed it ourselves and nothing ran since
        if self.head() == commit and not git(self.path, "status", "--porcelain"):
            self._clean_at = commit
            return
        self.discard_uncommitted()
        git(self.path, "reset", "-q", "--hard", commit)
        self._clean_at = commit

    def keep(self, task_id: str, commit: str) -> None:
        """Reference a task's work so that switching tasks never loses it."""
        git(self.repo, "update-ref", f"refs/loops/tasks/{self.loop}/{task_id}", commit)

    def discard_uncommitted(self) -> None:
        if git(self.path, "status", "--porcelain"):
            git(self.path, "merge", "--abort", check=False)
            git(self.path, "reset", "-q", "--hard")
            git(self.path, "clean", "-qfd")

    def merge_main(self) -> list[str]:
        """Merge current main into the loop branch (for a conflicted merge). Returns the
        conflicted files; they are left with conflict markers for the agent to resolve."""
        self._clean_at = None
        out = git(self.path, "merge", "--no-edit", self.main_head(), check=False)
        conflicted = git(self.path, "diff", "--name-only", "--diff-filter=U").splitlines()
        if not conflicted and "CONFLICT" in out:
            conflicted = ["(see git status)"]
        return conflicted

    # ------------------------------------------------------------------ iterations
    def commit_iteration(self, message: str) -> IterationCommit:
        """Commit everything the agent changed (including a merge it resolved)."""
        self._clean_at = None
        git(self.path, "add", "-A")
        try:
            git(self.path, "commit", "-q", "--no-verify", "-m", message)
        except GitError:
            if git(self.path, "status", "--porcelain") or self._merging():
                raise
            return IterationCommit(None, [], DiffStat())  # the agent changed nothing
        # One call for the new commit's id and what it changed against its first parent.
        out = git(self.path, "show", "--first-parent", "--numstat", "--format=%H", "HEAD")
        sha, *lines = out.splitlines()
        files: list[str] = []
        ins = dels = 0
        for line in lines:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            files.append(parts[2])
            ins += int(parts[0]) if parts[0].isdigit() else 0
            dels += int(parts[1]) if parts[1].isdigit() else 0
        self._clean_at = sha
        return IterationCommit(
            sha, files, DiffStat(files=len(files), insertions=ins, deletions=dels)
        )

    def _merging(self) -> bool:
        if self._git_dir is None:
            found = Path(git(self.path, "rev-parse", "--git-dir"))
            self._git_dir = found if found.is_absolute() else self.path / found
        return (self._git_dir / "MERGE_HEAD").exists()

    def push(self, remote: str) -> None:
        """Publish the loop branch to a shared remote (distributed mode)."""
        git(self.path, "push", "-q", remote, f"HEAD:refs/heads/{self.branch}", "--force-with-lease")


def _exclude_state_dir(repo: Path) -> None:
    """Keep `.loops/` out of the user's `git status` without touching their files."""
    common = Path(git(repo, "rev-parse", "--git-common-dir"))
    if not common.is_absolute():
        common = repo / common
    exclude = common / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if ".loops/" not in text.splitlines():
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + ".loops/\n")
