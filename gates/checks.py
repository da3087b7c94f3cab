"""Running script checks safely, and finding the files a claim must not touch.

A check runs in its own process group (killed as a whole at its timeout), with an
environment stripped of secrets, its output kept in a file and cut to a tail."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from events import CriterionResult
from events.secrets import allowed_env

DEFAULT_TIMEOUT_S = 600.0
OUTPUT_TAIL_BYTES = 4000

# Files that change what a test runner does without being named on its command line.
_RUNNER_CONFIG = ("conftest.py", "*/conftest.py", "pytest.ini", "tox.ini", "setup.cfg")


def scrubbed_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a check runs with: the allow-listed variables of `base` (default:
    this process's environment), never a secret or a git redirect."""
    return allowed_env(base)


def _tail(path: Path, limit: int) -> str:
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return ("[...]\n" + text) if size > limit else text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_script(
    command: str,
    cwd: Path,
    *,
    criterion: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
    env: Mapping[str, str] | None = None,
    record_group: bool = False,
) -> CriterionResult:
    """Run `command` with `bash -c` in `cwd`; passes on exit code 0. With
    `record_group`, the process group is noted beside `cwd` while it runs, so that the
    next user of the worktree can kill what a crashed runner left behind."""
    start = time.monotonic()
    timed_out = False
    with tempfile.NamedTemporaryFile(prefix="loops-check-", suffix=".log", delete=False) as out:
        out_path = Path(out.name)
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=dict(env) if env is not None else scrubbed_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills every child
        )
        if record_group:
            leftover_file(cwd).write_text(str(proc.pid))
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait(timeout=30)
        finally:
            _kill_group(proc)  # stragglers the command left behind
            if record_group:
                leftover_file(cwd).unlink(missing_ok=True)
    try:
        tail = _tail(out_path, tail_bytes)
    finally:
        out_path.unlink(missing_ok=True)
    if timed_out:
        tail += f"\n[killed after {timeout_s:g}s timeout]"
    return CriterionResult(
        criterion=criterion,
        kind="script",
        passed=proc.returncode == 0 and not timed_out,
        command=command,
        exit_code=None if timed_out else proc.returncode,
        duration_s=round(time.monotonic() - start, 3),
        timed_out=timed_out,
        output_tail=tail,
        judged_by="script",
    )


def leftover_file(wt: Path) -> Path:
    """Where a check running in worktree `wt` notes its process group."""
    return wt.parent / f"{wt.name}.pgid"


def kill_leftovers(wt: Path) -> int:
    """Kill the processes of a check that a crashed runner left running in `wt` (those
    of the noted process group whose working directory is inside `wt`: a recycled
    group id never matches). Returns how many were killed."""
    note = leftover_file(wt)
    try:
        pgid = int(note.read_text())
    except (OSError, ValueError):
        return 0
    root = str(wt.resolve())
    killed = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cwd = os.readlink(stat.parent / "cwd")
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and (cwd == root or cwd.startswith(root + "/")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)
                killed += 1
    note.unlink(missing_ok=True)
    return killed


def _candidate_paths(command: str) -> Iterable[str]:
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    for token in tokens:
        if token in {"&&", "||", ";", "|"}:
            continue
        for part in token.split("="):
            part = part.split("::", 1)[0].strip().rstrip(";")
            if part and not part.startswith("-") and part not in {".", "./"}:
                yield part


def command_paths(commands: Sequence[str], root: Path) -> tuple[set[str], set[str]]:
    """Files and directories (relative to `root`) that `commands` name and that exist."""
    files: set[str] = set()
    dirs: set[str] = set()
    root = root.resolve()
    for command in commands:
        for token in _candidate_paths(command):
            candidate = (root / token).resolve()
            try:
                rel = candidate.relative_to(root).as_posix()
            except ValueError:
                continue  # outside the tree: not something a claim can change
            if rel == ".":
                continue
            if candidate.is_file():
                files.add(rel)
            elif candidate.is_dir():
                dirs.add(rel.rstrip("/") + "/")
    return files, dirs


def flagged_files(
    changed: Sequence[str],
    *,
    commands: Sequence[str],
    root: Path,
    protected: Sequence[str],
) -> list[str]:
    """The changed files that touch the spec/state/config (`protected` globs) or that the
    check commands run (files they name, everything under directories they name, and the
    test runner's configuration files)."""
    files, dirs = command_paths(commands, root)
    patterns = list(protected)
    if any("pytest" in c for c in commands):
        patterns += _RUNNER_CONFIG
    flagged = []
    for path in changed:
        if (
            path in files
            or any(path.startswith(d) for d in dirs)
            or any(fnmatch.fnmatchcase(path, p) for p in patterns)
        ):
            flagged.append(path)
    return sorted(flagged)
