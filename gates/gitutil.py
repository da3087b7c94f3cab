"""The gate's and the merge queue's git operations, on the one git layer (`infra.git`:
its timeout, identity and environment policies). Plain git commands: what an operator
would type, the same against a local repository and a clone of a remote."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gates.checks import kill_leftovers
from gates.errors import WorktreeBlocked
from infra.files import FileLock
from infra.git import CLONE_TIMEOUT_S, GitError, git, git_path, run_git

LOOP_BRANCH_PREFIX = "loop/"

log = logging.getLogger(__name__)


def resolve_commit(repo: Path | str, rev: str) -> str | None:
    """The full sha of `rev` if it names a commit in `repo`, else None."""
    if not rev or rev.startswith("-"):
        return None
    proc = run_git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve_commits(repo: Path | str, *revs: str) -> list[str | None]:
    """`resolve_commit` of each of `revs`, in one git process."""
    if not revs:
        return []
    safe = [r if r and not r.startswith("-") and r.isprintable() else "-" for r in revs]
    query = "".join(f"{rev}^{{commit}}\n" for rev in safe)
    out = run_git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", input=query)
    found: list[str | None] = []
    for rev, line in zip(safe, out.stdout.splitlines(), strict=False):
        sha, _, kind = line.partition(" ")
        found.append(sha if kind == "commit" and rev != "-" else None)
    found += [None] * (len(revs) - len(found))
    return found


def is_ancestor(repo: Path | str, ancestor: str, descendant: str) -> bool:
    """True when `ancestor` is reachable from `descendant` (or equal to it)."""
    proc = run_git(repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(["merge-base", "--is-ancestor"], _last_line(proc.stderr), proc.returncode)
    return proc.returncode == 0


def diff_text(repo: Path | str, base: str, commit: str, max_bytes: int = 60_000) -> str:
    """The patch of `base...commit`, cut to `max_bytes` (for a judge to read)."""
    out = git(repo, "diff", "--stat", "--patch", f"{base}...{commit}")
    return out if len(out) <= max_bytes else out[:max_bytes] + "\n[... diff cut ...]"


def fetch(repo: Path | str, remote: str) -> None:
    """Fetch every branch of `remote` (its remote-tracking refs are updated, pruned)."""
    run_git(repo, "fetch", "--prune", "--quiet", remote)


def main_ref(main: str, remote: str | None) -> str:
    """The ref that holds main's tip: the remote-tracking ref when working against a remote."""
    return f"refs/remotes/{remote}/{main}" if remote else f"refs/heads/{main}"


@contextmanager
def worktree(repo: Path | str, rev: str, *, prefix: str = "loops-wt-") -> Iterator[Path]:
    """A clean, detached worktree of `rev` in a temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        git(repo, "worktree", "add", "--detach", "--force", str(path), rev)
        yield path
    finally:
        run_git(repo, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
        run_git(repo, "worktree", "prune", check=False)


@functools.lru_cache(maxsize=256)
def _common_dir_of(repo: str) -> Path:
    return git_path(repo, "--git-common-dir")


def _common_dir(repo: Path | str) -> Path:
    return _common_dir_of(str(Path(repo).resolve()))


def scratch_dir(repo: Path | str) -> Path:
    """Where `scratch` keeps the worktrees of `repo`. Outside the repository: tools that
    walk up from a checkout (pytest's rootdir and conftest discovery) must find nothing
    of the live working tree above it."""
    common = _common_dir(repo)
    digest = hashlib.sha1(str(common).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"loops-scratch-{common.parent.name}-{digest}"


def remove_scratch(repo: Path | str) -> None:
    """Delete the scratch worktrees of `repo` (when the repository itself goes away)."""
    shutil.rmtree(scratch_dir(repo), ignore_errors=True)
    run_git(repo, "worktree", "prune", check=False)


@contextmanager
def scratch(repo: Path | str, rev: str, *, pool: str = "scratch") -> Iterator[Path]:
    """A clean, detached worktree of `rev`, reused between calls: one of a pool of
    worktrees in a temporary directory of the repository's own, each held by a file lock while in use
    (so concurrent jobs on one host never share one). Reuse makes a checkout touch only
    the files that differ; forced checkout and `clean -ffdx` make it clean, whatever
    the previous (possibly killed) user left behind."""
    base = scratch_dir(repo)
    base.mkdir(exist_ok=True)
    slot = 0
    while not (lock := FileLock(base / f"{pool}-{slot}.lock")).acquire(wait=False):
        slot += 1
    path = base / f"{pool}-{slot}"
    try:
        kill_leftovers(path)  # checks a crashed user of this slot left running
        reused = (path / ".git").is_file() and (
            run_git(path, "checkout", "--quiet", "--detach", "--force", rev, check=False)
        ).returncode == 0
        if reused:
            git(path, "clean", "-ffdxq")
        else:
            shutil.rmtree(path, ignore_errors=True)
            run_git(repo, "worktree", "prune", check=False)
            git(repo, "worktree", "add", "--detach", "--force", str(path), rev)
        yield path
    finally:
        lock.release()


def remote_url(repo: Path | str, remote: str) -> str | None:
    """The URL of `remote` in `repo`, if it has one."""
    proc = run_git(repo, "remote", "get-url", remote, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def cached_clone(url: str) -> Path:
    """A clone of `url` in the temp directory, made once per host and fetched on each
    call: how a verification job on another machine gets at the claimed commit."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"loops-clone-{digest}"
    with FileLock(path.parent / f"loops-clone-{digest}.lock"):
        if not (path / ".git").exists():
            shutil.rmtree(path, ignore_errors=True)
            git(
                path.parent,
                "clone",
                "--quiet",
                "--no-checkout",
                url,
                str(path),
                timeout=CLONE_TIMEOUT_S,
            )
        else:
            fetch(path, "origin")
    return path


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]


def loop_branch(loop: str) -> str:
    return f"{LOOP_BRANCH_PREFIX}{loop}"


def ensure_loop_branch(repo: Path | str, loop: str, main: str = "main") -> str:
    """Create branch `loop/<loop>` at main if it does not exist; returns the branch name.

    An existing branch is left where it is: it may hold unmerged work."""
    branch = loop_branch(loop)
    if resolve_commit(repo, f"refs/heads/{branch}") is None:
        start = resolve_commit(repo, f"refs/heads/{main}") or resolve_commit(repo, main)
        if start is None:
            raise GitError(["branch", branch, main], f"no commit for {main!r}")
        git(repo, "branch", branch, start)
    return branch


def ensure_loop_worktree(repo: Path | str, loop: str, path: Path, main: str = "main") -> Path:
    """A worktree at `path` with branch `loop/<loop>` checked out (created if missing)."""
    branch = ensure_loop_branch(repo, loop, main)
    if not (path / ".git").exists():
        git(repo, "worktree", "add", str(path), branch)
    return path


def conflicted_files(wt: Path) -> list[str]:
    out = git(wt, "diff", "--name-only", "--diff-filter=U")
    return sorted({line for line in out.splitlines() if line})


def push_main(repo: Path | str, remote: str, new: str, main: str = "main") -> bool:
    """Push `new` to the remote's main without force. False when main moved meanwhile
    (the push was not a fast-forward, or the remote rejected it)."""
    proc = run_git(repo, "push", "--porcelain", remote, f"{new}:refs/heads/{main}", check=False)
    if proc.returncode == 0:
        return True
    text = proc.stdout + proc.stderr
    if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
        return False
    raise GitError(["push", remote, f"{new}:{main}"], _last_line(text), proc.returncode, text)


def checked_out_at(repo: Path | str, ref: str) -> Path | None:
    """The worktree where branch `ref` is checked out, if any."""
    path: str | None = None
    for line in run_git(repo, "worktree", "list", "--porcelain").stdout.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree ") :]
        elif line == f"branch {ref}" and path:
            return Path(path)
    return None


def update_ref_cas(repo: Path | str, ref: str, new: str, old: str) -> bool:
    """Move `ref` from `old` to `new` atomically; False when it no longer points at `old`.

    When the branch is checked out (a user's `loops run` on their current branch), it
    is fast-forwarded in that worktree instead, so its files follow; git refuses rather
    than overwrite the user's uncommitted changes, and those are never touched."""
    worktree = checked_out_at(repo, ref)
    if worktree is None:
        return run_git(repo, "update-ref", ref, new, old, check=False).returncode == 0
    if run_git(worktree, "rev-parse", "HEAD").stdout.strip() != old:
        return False
    proc = run_git(worktree, "merge", "--ff-only", "--no-edit", "-q", new, check=False)
    if proc.returncode == 0:
        return True
    text = proc.stderr or proc.stdout
    if "would be overwritten" in text:
        # Not a race: the person's own changes are in the way. Never touch them.
        files = [ln.strip() for ln in text.splitlines() if ln.startswith(("\t", "    "))]
        raise WorktreeBlocked(str(worktree), files, text.strip())
    log.warning("could not fast-forward %s in %s: %s", ref, worktree, text.strip()[-300:])
    return False
