"""The one git layer: every git command the harness runs goes through `run_git`.

Built on GitPython (`git.cmd.Git.execute`, the engine of `Repo.git.<cmd>`), which
starts the git binary (its environment, `LC_ALL=C`, a missing binary); the wait is
ours: `communicate(timeout=...)` on the command's own process group, killed whole when
time runs out. (GitPython's `kill_after_timeout` starts a watchdog thread per command:
at 30 loops that was 5-17% slower under the GIL, see docs/BENCHMARKS.md.)
The policies live here, once:

- **Timeout**: every call has one (`TIMEOUT_S`, a clone `CLONE_TIMEOUT_S`); a command
  that runs out of time raises `GitError` saying so.
- **Identity**: a commit the harness makes is by `coding-loops <loops@localhost>`
  (author and committer), unless the caller's environment names someone
  (`GIT_AUTHOR_NAME`, ...): a machine with no git identity can still commit.
- **Environment**: variables that would redirect git to another repository, index,
  object store or config (`GIT_DIR`, `GIT_WORK_TREE`, ... `REDIRECTS`; a git hook sets
  them) are stripped; `GIT_TERMINAL_PROMPT=0`, so no call waits for a password. A
  caller that means to redirect git (a loop's private git dir) passes `env`.
- **Errors**: one `GitError`, naming the command and the last line git printed.

Nothing here runs git inside an agent's work tree on the agent's own config: see
`loops/workspace.py`, which names the git dir and the work tree explicitly and adds
`SAFE_CONFIG`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from git.cmd import Git
from git.exc import GitCommandNotFound

from events import LoopsError

TIMEOUT_S = 120.0
CLONE_TIMEOUT_S = 600.0

IDENTITY = {
    "GIT_AUTHOR_NAME": "coding-loops",
    "GIT_AUTHOR_EMAIL": "loops@localhost",
    "GIT_COMMITTER_NAME": "coding-loops",
    "GIT_COMMITTER_EMAIL": "loops@localhost",
}
# Variables of the caller's environment that would redirect git.
REDIRECTS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)
# Whatever a config file says, git run with these runs no program of anyone's choosing.
# `-c` values reach child git processes too (GIT_CONFIG_PARAMETERS), and the command
# line wins over every config file.
SAFE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "diff.ignoreSubmodules=all",
    "-c",
    "submodule.recurse=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
)


class GitError(LoopsError):
    """A git command failed (`returncode`) or timed out (`returncode` None)."""

    def __init__(
        self, args: Sequence[str], detail: str, returncode: int | None = 1, output: str = ""
    ) -> None:
        super().__init__(f"git {' '.join(args)}: {detail}")
        self.args_ = list(args)
        self.detail = detail
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class GitResult:
    """What a git command printed, and how it ended (stdout without its last newline)."""

    returncode: int
    stdout: str
    stderr: str


def _env_overrides(env: Mapping[str, str] | None) -> dict[str, str]:
    """What the command's environment sets over the process's own."""
    out = {k: v for k, v in IDENTITY.items() if k not in os.environ}
    out["GIT_TERMINAL_PROMPT"] = "0"
    if env:
        out.update(env)
    return out


def _unset(env: Mapping[str, str] | None) -> list[str]:
    """`env -u` for the redirecting variables the process has (GitPython starts every
    command from the process's environment, so they are removed on the way): none in
    the usual case, so no extra program runs."""
    given = env or {}
    names = [k for k in REDIRECTS if k in os.environ and k not in given]
    return ["env", *(f"--unset={k}" for k in names)] if names else []


def _text(data: bytes | None) -> str:
    """What git printed, decoded, without its last newline (as GitPython gives it)."""
    text = (data or b"").decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else text


def run_git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    timeout: float = TIMEOUT_S,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> GitResult:
    """Run `git [options] ARGS` in `cwd`. Raises `GitError` on a timeout, and on a
    non-zero exit when `check`. `env` adds to (or redirects) the command's environment;
    `options` go before the subcommand (`--git-dir=...`, `-c key=value`)."""
    argv = [*_unset(env), "git", "-C", str(cwd), *options, *args]
    try:
        with contextlib.ExitStack() as stack:
            stdin = None
            if input is not None:
                stdin = stack.enter_context(tempfile.TemporaryFile())
                stdin.write(input.encode())
                stdin.seek(0)
            started = Git(str(cwd)).execute(
                argv,
                istream=stdin,
                as_process=True,
                env=_env_overrides(env),
                process_group=0,  # its own group: a timeout kills git and its children
            )
            proc = started.proc
            assert proc is not None  # as_process: the command's Popen
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, err = proc.communicate()
                raise GitError(args, f"timed out after {timeout:g}s", None, _text(err)) from None
            status = proc.returncode
    except (GitCommandNotFound, OSError) as exc:
        raise GitError(args, f"cannot run git: {exc}", None) from None
    stdout, stderr = _text(out), _text(err)
    if check and status != 0:
        lines = (stderr or stdout).strip().splitlines()
        raise GitError(args, lines[-1] if lines else f"exit {status}", status, stderr + stdout)
    return GitResult(status, stdout, stderr)


def git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    timeout: float = TIMEOUT_S,
    input: str | None = None,
) -> str:
    """The stripped stdout of `git ARGS` in `cwd` (a trusted repository: the operator's,
    or a scratch worktree of the harness). Raises `GitError` on failure."""
    return run_git(cwd, *args, check=check, timeout=timeout, input=input).stdout.strip()


def repo_root(path: Path) -> Path:
    """The top of the git work tree that contains `path`."""
    return Path(git(path, "rev-parse", "--show-toplevel"))


def current_branch(repo: Path) -> str:
    return git(repo, "rev-parse", "--abbrev-ref", "HEAD")


def git_path(repo: Path | str, *args: str) -> Path:
    """An absolute path git prints for `repo` (`--git-common-dir`, `--git-path X`)."""
    path = Path(git(repo, "rev-parse", *args))
    return (path if path.is_absolute() else Path(repo) / path).resolve()


def object_dir(repo: Path) -> Path:
    """The object store of `repo` (its common git dir's, for a linked worktree)."""
    return git_path(repo, "--git-path", "objects")
