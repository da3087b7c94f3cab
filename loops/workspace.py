"""A loop's git workspace: its branch `loop/<name>` in a work tree of its own, with a
git directory of its own that shares no refs and no config with the operator's repo.

Layout (DIR is the project's state directory, `REPO/.loops` by default):

- `DIR/worktrees/<loop>`: the work tree the agent edits. Its `.git` is a gitfile
  (`gitdir: DIR/git/<loop>.git`) so the agent's own `git status`/`diff`/`log` work.
- `DIR/git/<loop>.git`: the harness's private git directory of the loop. Its refs are
  its own, so an agent's `git push . HEAD:main` or `branch -f main` moves nothing in the
  operator's repo; inside the sandbox it is mounted read-only, so those commands fail.
  It has no objects of its own worth speaking of: `objects/info/alternates` points at
  the operator's object store, which the agent reads (read-only) through it.

Git's security model: running git inside an untrusted repository is unsafe (its
config can name programs: `core.fsmonitor`, hooks, filters, `gpg.program`). So the
harness never runs git on `<worktree>/.git`: every call names the private git dir and
the work tree explicitly, with defensive `-c` overrides, and the private dir's config
and alternates are rewritten by the harness before use if anything changed them (an
agent with the sandbox off). The harness writes the objects of its commits straight
into the operator's object store (`GIT_OBJECT_DIRECTORY`), then moves
`refs/heads/loop/<name>` there with `update-ref`: the operator's repo holds each
iteration's commit before anything (a claim, a keep-ref) refers to it.

After each iteration the worker commits whatever the agent changed, so a crash loses
at most the iteration in flight. Every git call has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from events import DiffStat
from infra.files import FileLock, write_text_atomic
from infra.git import (
    SAFE_CONFIG,
    GitError,
    git,
    git_path,
    object_dir,
    run_git,
)
from loops.sandbox import SandboxConfig, SandboxPolicy

# The whole config of a private git dir: the harness's, never the agent's.
_PRIVATE_CONFIG = (
    "[core]\n"
    "\trepositoryformatversion = 0\n"
    "\tfilemode = true\n"
    "\tbare = false\n"
    "\tlogallrefupdates = true\n"
    "[gc]\n"
    "\tauto = 0\n"
)
# Files that would make git read another directory's config or refs.
_REDIRECT_FILES = ("commondir", "config.worktree", "gitdir")


@dataclass(frozen=True)
class IterationCommit:
    """What one iteration changed, as committed on the loop's branch."""

    commit: str | None  # None when the agent changed nothing
    changed_files: list[str]
    diff_stat: DiffStat


class Workspace:
    """The work tree of one loop, on branch `loop/<name>`, with a private git dir.

    `root` is where the work trees go (default `repo/.loops/worktrees`); the private
    git dirs go beside it (`<root>/../git/<loop>.git`).
    """

    def __init__(self, repo: Path, loop: str, main_branch: str, root: Path | None = None) -> None:
        self.repo = repo
        self.loop = loop
        self.main_branch = main_branch
        self.branch = f"loop/{loop}"
        self.root = (root or repo / ".loops" / "worktrees").absolute()
        self.path = self.root / loop
        self.git_dir = self.root.parent / "git" / f"{loop}.git"
        self._clean_at: str | None = None  # HEAD when we last left the worktree clean
        self._objects: Path | None = None
        self._env: dict[str, str] | None = None
        self._options: tuple[str, ...] = ()

    # ------------------------------------------------------------------ git
    @property
    def objects(self) -> Path:
        """The operator's object store, shared (read-only for the agent) by the loop."""
        if self._objects is None:
            self._objects = object_dir(self.repo)
        return self._objects

    def _git(self, *args: str, check: bool = True) -> str:
        """git on the private dir and the work tree, never on `<worktree>/.git`."""
        if self._env is None:
            # New objects go straight into the operator's store; objects an agent wrote
            # into the private dir (possible only unsandboxed) are still readable.
            self._env = {
                "GIT_OBJECT_DIRECTORY": str(self.objects),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self.git_dir / "objects"),
            }
            self._options = (
                f"--git-dir={self.git_dir}",
                f"--work-tree={self.path}",
                *SAFE_CONFIG,
            )
        out = run_git(self.path, *args, check=check, env=self._env, options=self._options)
        return out.stdout.strip()

    def _guard(self) -> None:
        """Put the private git dir's config and alternates back as the harness wrote
        them (only an agent with the sandbox off can have changed them)."""
        config = self.git_dir / "config"
        alternates = self.git_dir / "objects" / "info" / "alternates"
        want_alt = f"{self.objects}\n"
        if _read(config) != _PRIVATE_CONFIG:
            write_text_atomic(config, _PRIVATE_CONFIG, mode=0o644)
        if _read(alternates) != want_alt:
            alternates.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(alternates, want_alt, mode=0o644)
        for name in _REDIRECT_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.git_dir / name).unlink()
        # `<worktree>/.git` is only for the agent's own git: whatever it made of it
        # (a directory, a symlink), it becomes the gitfile again, written in place.
        gitfile = self.path / ".git"
        want = f"gitdir: {self.git_dir}\n"
        if gitfile.is_symlink() or _read(gitfile) != want:
            if gitfile.is_dir() and not gitfile.is_symlink():
                shutil.rmtree(gitfile)
            with contextlib.suppress(FileNotFoundError):
                gitfile.unlink()
            fd = os.open(gitfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(want)

    # ------------------------------------------------------------------ setup
    def ensure(self) -> None:
        """Create the private git dir, the branch (from the operator's `loop/<name>`
        if it exists, else main) and the work tree if they do not exist yet."""
        _exclude_state_dir(self.repo)
        if (self.git_dir / "HEAD").is_file() and self.path.is_dir():
            self._guard()
            return
        self.root.mkdir(parents=True, exist_ok=True)
        # Loops start together (threads of `loops up`, or worker processes on one repo).
        with FileLock(self.root / ".lock"):
            self._create()

    def _create(self) -> None:
        self._forget_linked_worktree()
        fresh = not (self.git_dir / "HEAD").is_file()
        if fresh:
            shutil.rmtree(self.git_dir, ignore_errors=True)
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            git(self.repo, "init", "-q", "--bare", str(self.git_dir))
        self.path.mkdir(parents=True, exist_ok=True)
        self._guard()
        if fresh:
            start = git(
                self.repo, "rev-parse", "--verify", "-q", f"refs/heads/{self.branch}", check=False
            ) or git(self.repo, "rev-parse", "--verify", f"{self.main_branch}^{{commit}}")
            self._git("update-ref", f"refs/heads/{self.branch}", start)
            self._git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
            self._publish(start)
        self._git("reset", "-q", "--hard")

    def _forget_linked_worktree(self) -> None:
        """A work tree of the old layout (a `git worktree` of the operator's repo, which
        shares its refs) is unregistered and replaced."""
        gitfile = self.path / ".git"
        text = _read(gitfile) or ""
        if not text.startswith("gitdir:") or Path(text[7:].strip()) == self.git_dir:
            return
        git(self.repo, "worktree", "remove", "--force", str(self.path), check=False)
        shutil.rmtree(self.path, ignore_errors=True)
        git(self.repo, "worktree", "prune", check=False)

    def _publish(self, commit: str, keep: str | None = None) -> None:
        """Point the operator repo's `loop/<name>` (and, with `keep`, the task's
        keep-ref) at `commit`. The harness wrote its objects into the operator's store,
        so one `update-ref` is enough; when an agent wrote objects of its own into the
        private dir (a `git commit` with the sandbox off), a fetch of the private branch
        (which is at `commit`) first brings whatever is missing."""
        ref = f"refs/heads/{self.branch}"
        refs = [ref] if keep is None else [ref, self._keep_ref(keep)]
        if _holds_objects(self.git_dir / "objects"):
            run_git(
                self.repo,
                "fetch",
                "-q",
                "--no-tags",
                "--no-write-fetch-head",
                str(self.git_dir),
                f"+{ref}:{ref}",
                options=SAFE_CONFIG,
            )
            refs = refs[1:]
        if refs:
            lines = "".join(f"update {r} {commit}\n" for r in refs)
            git(self.repo, "update-ref", "--stdin", input=lines)

    def _keep_ref(self, task_id: str) -> str:
        return f"refs/loops/tasks/{self.loop}/{task_id}"

    def head(self) -> str:
        return self._git("rev-parse", "HEAD")

    def main_head(self) -> str:
        return git(self.repo, "rev-parse", self.main_branch)

    def unmerged_commits(self) -> int:
        """Commits on the loop branch that main does not have."""
        return int(self._git("rev-list", "--count", f"{self.main_head()}..HEAD") or 0)

    def reset_to(self, commit: str) -> None:
        """Point the loop branch at `commit` (main for a fresh task, the task's own last
        commit for a resumed one), discarding uncommitted leftovers of a crash."""
        if self._clean_at == commit:
            return  # we committed it ourselves and nothing ran since
        self._guard()
        if self.head() == commit and not self._status():
            self._clean_at = commit
            return
        self.discard_uncommitted()
        self._git("reset", "-q", "--hard", commit)
        self._publish(commit)
        self._clean_at = commit

    def keep(self, task_id: str, commit: str) -> None:
        """Reference a task's work so that switching tasks never loses it."""
        git(self.repo, "update-ref", self._keep_ref(task_id), commit)

    def _status(self) -> str:
        return self._git("status", "--porcelain", "--ignore-submodules=all")

    def discard_uncommitted(self) -> None:
        if self._status() or self._merging():
            self._git("merge", "--abort", check=False)
            self._git("reset", "-q", "--hard")
            self._git("clean", "-qffd")  # -ff: repositories the agent made, too

    def merge_main(self) -> list[str]:
        """Merge current main into the loop branch (for a conflicted merge). Returns the
        conflicted files; they are left with conflict markers for the agent to resolve."""
        self._clean_at = None
        self._guard()
        out = self._git("merge", "--no-edit", self.main_head(), check=False)
        conflicted = self._git("diff", "--name-only", "--diff-filter=U").splitlines()
        if not conflicted and "CONFLICT" in out:
            conflicted = ["(see git status)"]
        if not conflicted and not self._merging():
            self._publish(self.head())
        return conflicted

    # ------------------------------------------------------------------ iterations
    def commit_iteration(self, message: str, keep: str | None = None) -> IterationCommit:
        """Commit everything the agent changed (including a merge it resolved), and
        bring the commit into the operator's repo as `loop/<name>` (and, with `keep`,
        as that task's keep-ref, in the same ref transaction)."""
        self._clean_at = None
        self._guard()
        try:
            self._git("add", "-A")
        except GitError:
            # A repository the agent made inside its work tree (a clone, `git init`)
            # is added as a gitlink, which makes git read its config; a broken one
            # fails the whole add. Such a repository cannot be merged anyway: leave
            # the untracked ones out and commit the rest.
            nested = self._untracked_repositories()
            if not nested:
                raise
            self._git("add", "-A", "--", ".", *(f":(top,literal,exclude){p}" for p in nested))
        try:
            self._git("commit", "-q", "--no-verify", "-m", message)
        except GitError:
            if self._status() or self._merging():
                raise
            return IterationCommit(None, [], DiffStat())  # the agent changed nothing
        # One call for the new commit's id and what it changed against its first parent.
        out = self._git(
            "show", "--no-ext-diff", "--first-parent", "--numstat", "--format=%H", "HEAD"
        )
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
        self._publish(sha, keep)
        self._clean_at = sha
        return IterationCommit(
            sha, files, DiffStat(files=len(files), insertions=ins, deletions=dels)
        )

    def take_tree(self, commit: str) -> None:
        """Make the work tree hold exactly `commit`'s files, with HEAD (and a merge in
        progress) left as they are: the work of an iteration that ran on another host,
        for `commit_iteration` to commit as this loop's own (`loops.runners.queued`)."""
        self._clean_at = None
        self._guard()
        self._git("read-tree", "--reset", "-u", f"{commit}^{{tree}}")
        self._git("clean", "-qffd")

    def _untracked_repositories(self) -> list[str]:
        out = self._git("ls-files", "-z", "--others", "--directory", "--exclude-standard")
        return [
            path.rstrip("/")
            for path in out.split("\0")
            if path.endswith("/") and (self.path / path / ".git").exists()
        ]

    def _merging(self) -> bool:
        return (self.git_dir / "MERGE_HEAD").exists()

    def has_main(self, commit: str) -> bool:
        """True if current main is already merged into `commit` (an ancestor of it)."""
        self._guard()
        main = self.main_head()
        return self._git("merge-base", main, commit, check=False).strip() == main

    def landed_first(self, files: list[str]) -> str | None:
        """What changed `files` on main since this branch forked: the task the merge
        queue landed (its `Loops-Task:` trailer, `loop/TASK`), else the commit's subject."""
        self._guard()
        base = self._git("merge-base", self.main_head(), "HEAD", check=False).strip()
        if not base or not files:
            return None
        out = self._git(
            "log",
            "--first-parent",
            "-1",
            "--format=%s%n%b",
            self.main_head(),
            f"^{base}",
            "--",
            *files,
            check=False,
        )
        lines = out.strip().splitlines()
        if not lines:
            return None
        tasks = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Loops-Task:")]
        return ", ".join(tasks) if tasks else f"the commit {lines[0][:100]!r}"

    def with_markers(self, files: list[str]) -> list[str]:
        """Those of `files` that still hold a conflict marker line (`<<<<<<< `, `>>>>>>> `)."""
        left = []
        for name in files:
            try:
                text = (self.path / name).read_text(encoding="utf-8", errors="replace")
            except (OSError, ValueError):
                continue  # deleted, or a directory: no markers in it
            if any(ln.startswith(("<<<<<<< ", ">>>>>>> ")) for ln in text.splitlines()):
                left.append(name)
        return left

    def push(self, remote: str) -> None:
        """Publish the loop branch to a shared remote (distributed mode), from the
        operator's repo (its remotes and credentials), never from the work tree."""
        self._publish(self.head())
        git(
            self.repo,
            "push",
            "-q",
            remote,
            f"refs/heads/{self.branch}:refs/heads/{self.branch}",
            "--force-with-lease",
        )

    # ------------------------------------------------------------------ sandbox
    def sandbox_policy(self, config: SandboxConfig | None = None) -> SandboxPolicy:
        """How an agent of this loop is isolated: `config` (with the LOOPS_SANDBOX*
        overrides); hidden, the operator's checkout (and its main checkout and git dir
        when it is a linked worktree) and the state directory (every loop's work tree,
        git dir, TMPDIR, the Redis URL, tokens, logs); readable again
        inside them, the object store and this loop's private git dir; TMPDIRs under
        `<state dir>/tmp/<loop>`. The work tree itself is writable."""
        common = git_path(self.repo, "--git-common-dir")
        # The operator's repo may be a linked worktree: its git dir and main checkout
        # live elsewhere, and are hidden too.
        hidden = [self.repo.absolute(), self.root.parent, common]
        if common.name == ".git":
            hidden.append(common.parent)
        return SandboxPolicy.build(
            config,
            base=self.repo,
            hidden=hidden,
            readable=[self.objects, self.git_dir],
            tmp_root=self.root.parent / "tmp" / self.loop,
        )


def _holds_objects(objects: Path) -> bool:
    """Whether an object directory has any object (loose or packed)."""
    try:
        with os.scandir(objects) as entries:
            for entry in entries:
                if entry.name == "info":
                    continue
                if entry.name != "pack":
                    return True
                with os.scandir(entry.path) as packs:
                    if any(True for _ in packs):
                        return True
    except OSError:
        return False
    return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _exclude_state_dir(repo: Path) -> None:
    """Keep `.loops/` out of the user's `git status` without touching their files."""
    exclude = git_path(repo, "--git-common-dir") / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if ".loops/" not in text.splitlines():
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + ".loops/\n")
