"""Running script checks safely.

A check runs in its own process group (killed as a whole at its timeout), with an
environment stripped of secrets, its output kept in a file and cut to a tail."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from events import CriterionResult
from events.secrets import allowed_env

DEFAULT_TIMEOUT_S = 600.0
OUTPUT_TAIL_BYTES = 4000


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
        note = leftover_file(cwd, proc.pid)
        if record_group:
            note.write_text(str(proc.pid))
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait(timeout=30)
        finally:
            _kill_group(proc)  # stragglers the command left behind
            if record_group:
                note.unlink(missing_ok=True)
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


@dataclass(frozen=True)
class Check:
    """One script check to run: what it verifies, its command, its own timeout."""

    criterion: str
    run: str
    timeout_s: float | None = None


def run_checks(
    checks: Sequence[Check],
    cwd: Path,
    *,
    workers: int = 2,
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    tail_bytes: int = OUTPUT_TAIL_BYTES,
    env: Mapping[str, str] | None = None,
    fail_fast: bool = False,
) -> list[CriterionResult]:
    """Run `checks` in `cwd`, at most `workers` at a time, each with its own timeout
    (else `default_timeout_s`) and output cap; the results in the order of `checks`.
    `fail_fast`: after the first failure, checks not yet started are not run (and have
    no result)."""
    env = dict(env) if env is not None else scrubbed_env()

    stop = threading.Event()  # set by the first failure when `fail_fast`

    def one(check: Check) -> CriterionResult | None:
        if stop.is_set():
            return None
        result = run_script(
            check.run,
            cwd,
            criterion=check.criterion,
            timeout_s=check.timeout_s or default_timeout_s,
            tail_bytes=tail_bytes,
            env=env,
            record_group=True,
        )
        if fail_fast and not result.passed:
            stop.set()
        return result

    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="check") as pool:
        return [r for r in pool.map(one, checks) if r is not None]


def leftover_file(wt: Path, pgid: int) -> Path:
    """Where a check running in worktree `wt` as process group `pgid` notes it (one note
    per check: the merge queue runs several checks in one worktree at once)."""
    return wt.parent / f"{wt.name}.pgid.{pgid}"


def kill_leftovers(wt: Path) -> int:
    """Kill the processes of a check that a crashed runner left running in `wt` (those
    of the noted process group whose working directory is inside `wt`: a recycled
    group id never matches). Returns how many were killed."""
    killed = 0
    for note in wt.parent.glob(f"{wt.name}.pgid*"):
        try:
            pgid = int(note.read_text())
        except (OSError, ValueError):
            note.unlink(missing_ok=True)
            continue
        killed += _kill_group_in(wt, pgid)
        note.unlink(missing_ok=True)
    return killed


def _kill_group_in(wt: Path, pgid: int) -> int:
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
    return killed
