"""Run an agent process with a hard deadline that kills its whole process group.

The agent runs in a session of its own (`start_new_session=True`), so on timeout
`os.killpg` takes down everything it started (shells, test servers, sub-agents),
not just the leader. After the leader exits, stragglers still holding our pipes are
killed too. Processes that left the group (`setsid`, double forks) die with the
sandbox's PID namespace (`loops/sandbox.py`); unsandboxed, `kill_strays` finds them by
the `LOOPS_WORKTREE` they inherited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Output kept for the reply and the transcript: the head and the tail (where a reply's
# `<promise>` is), with the middle cut and the cut said. The line callback still sees
# everything.
OUTPUT_CAP_BYTES = 8 * 1024 * 1024
HEAD_BYTES = OUTPUT_CAP_BYTES // 2
TAIL_BYTES = OUTPUT_CAP_BYTES - HEAD_BYTES
# After SIGTERM, how long the group gets before SIGKILL.
KILL_GRACE_S = 1.0
CANCEL_POLL_S = 0.1  # how quickly a stopping loop kills its agent
# How long readers may drain the pipes after the leader has exited.
DRAIN_S = 2.0


@dataclass(frozen=True)
class ProcessResult:
    """What a process printed and how it ended. `exit_code` is None when it was killed."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    pid: int
    cancelled: bool = False  # killed because the loop was stopping (not the agent's fault)


class _Reader(threading.Thread):
    def __init__(
        self,
        stream: IO[str],
        on_line: Callable[[str], None] | None,
        on_output: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.on_line = on_line
        self.on_output = on_output
        self.output = CappedText()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for line in self.stream:
                self.output.add(line)
                if self.on_output is not None:
                    try:
                        self.on_output()
                    except Exception as exc:  # a listener bug: report it, keep draining
                        self.error = exc
                        self.on_output = None
                if self.on_line is not None:
                    try:
                        self.on_line(line)
                    except Exception as exc:  # a parser bug: report it, keep draining
                        self.error = exc
                        self.on_line = None
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the process group is gone

    @property
    def text(self) -> str:
        return self.output.text()


class CappedText:
    """The first `head` and the last `tail` characters of a stream of text, with a
    `[... N bytes cut ...]` line between them when the middle did not fit."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.head_cap = head
        self.tail_cap = tail
        self.head: list[str] = []
        self.head_size = 0
        self.tail: deque[str] = deque()
        self.tail_size = 0
        self.cut = 0

    def add(self, text: str) -> None:
        if self.head_size < self.head_cap:
            room = self.head_cap - self.head_size
            self.head.append(text[:room])
            self.head_size += min(len(text), room)
            text = text[room:]
            if not text:
                return
        if len(text) > self.tail_cap:
            self.cut += len(text) - self.tail_cap
            text = text[-self.tail_cap :]
        self.tail.append(text)
        self.tail_size += len(text)
        while self.tail_size > self.tail_cap:
            first = self.tail[0]
            over = self.tail_size - self.tail_cap
            if len(first) <= over:
                self.tail.popleft()
                self.tail_size -= len(first)
                self.cut += len(first)
            else:
                self.tail[0] = first[over:]
                self.tail_size -= over
                self.cut += over

    def text(self) -> str:
        head = "".join(self.head)
        tail = "".join(self.tail)
        if not self.cut:
            return head + tail
        cut = self.cut
        # The tail may start in the middle of a line: drop that piece, so that no marker
        # (a `PASSED` cut out of `TEST PASSED`) is made up by the cut.
        first_newline = tail.find("\n")
        if 0 <= first_newline < len(tail) - 1:
            cut += first_newline + 1
            tail = tail[first_newline + 1 :]
        newline = "" if head.endswith("\n") else "\n"
        return f"{head}{newline}[... {cut} bytes cut ...]\n{tail}"


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group led by `pid`; a group that is gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_strays(worktree: Path) -> int:
    """Kill every process left over from agent runs in `worktree`: those whose
    environment says `LOOPS_WORKTREE=<worktree>` (set for every agent process, and
    inherited by `setsid` and double-forked children, which escape the process group).
    The sandbox's PID namespace makes this unnecessary; it is the fallback where the
    agent runs unsandboxed, after each run and when a loop starts again after a crash.
    Returns how many were killed (0 where there is no /proc)."""
    needle = f"\0LOOPS_WORKTREE={worktree}\0".encode()
    me = os.getpid()
    killed = 0
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return 0
    for name in entries:
        if int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:
            continue
        if needle in environ or environ.endswith(needle[:-1]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                killed += 1
    return killed


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin_text: str,
    timeout_s: float,
    on_stdout_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    on_output: Callable[[], None] | None = None,
    on_spawn: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Run `argv` in `cwd` with `stdin_text` on stdin; kill its group after `timeout_s`,
    or as soon as `cancel` is set (the loop is stopping: Ctrl-C, `loops stop`, or the
    monitor aborting a silent run).

    `on_stdout_line` is called from a reader thread for each line as it arrives;
    `on_output` for each line on stdout or stderr (a sign of life); `on_spawn` with
    the pid of the group leader once it started.
    Raises OSError only when the program cannot be started at all.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    if on_spawn is not None:
        on_spawn(proc.pid)
    out = _Reader(proc.stdout, on_stdout_line, on_output)
    err = _Reader(proc.stderr, None, on_output)
    out.start()
    err.start()
    writer = threading.Thread(target=_feed, args=(proc.stdin, stdin_text), daemon=True)
    writer.start()

    timed_out = cancelled = False
    deadline = start + timeout_s
    try:
        while True:
            try:
                proc.wait(timeout=max(min(CANCEL_POLL_S, deadline - time.monotonic()), 0.001))
                break
            except subprocess.TimeoutExpired:
                cancelled = cancel is not None and cancel.is_set()
                if cancelled or time.monotonic() >= deadline:
                    raise
    except subprocess.TimeoutExpired:
        timed_out = not cancelled
        kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_S)
        kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        # Stragglers (a backgrounded server, a hung grandchild) must not outlive the run.
        kill_group(proc.pid, signal.SIGKILL)
        for thread in (out, err, writer):
            thread.join(DRAIN_S)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
    for reader in (out, err):
        if reader.error is not None:
            raise reader.error
    return ProcessResult(
        stdout=out.text,
        stderr=err.text,
        exit_code=None if timed_out or cancelled else proc.returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        pid=proc.pid,
        cancelled=cancelled,
    )


def _feed(stream: IO[str], text: str) -> None:
    # The agent may exit without reading its stdin; that is its business.
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        stream.write(text)
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        stream.close()
