"""The running agent's liveness, and the watch that can abort it.

The worker's main thread is blocked in `runner.run` while an agent works, so two
things happen beside it, on the `RunWatch` thread of that run:

- signs of life are gathered for the heartbeat (`AgentRun`): the runner reports
  output lines and tool calls through `AgentRequest.on_activity`; file changes in the
  work tree are found by an mtime scan (skipping `.git`) at least once per heartbeat;
- the stream tail is read for an `iteration.abort` meant for this run (from a cursor
  taken just before the agent started, so only new entries are read, and only their
  `type` field unless they are an abort). A match sets the run's `cancel` event, which
  every runner honours by killing the agent's whole process group. The command itself
  is acknowledged later, on the worker's ordinary event path, once the run is recorded.

The loop's own stop event is mirrored into the run's `cancel` too (Ctrl-C, `loops stop`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from events import AgentSign, IterationAbort

__all__ = ["AbortFeed", "AgentRun", "RunWatch", "tree_signature"]

ABORT_POLL_S = 0.5  # how often the stream tail is read for an abort while an agent runs
CANCEL_POLL_S = 0.1  # how quickly a stopping loop reaches the run's cancel event


class AbortFeed(Protocol):
    """Where a worker reads `iteration.abort` commands while its agent runs."""

    def cursor(self) -> str:
        """A position: commands published after now come after it."""

    def since(self, cursor: str) -> tuple[str, list[IterationAbort]]:
        """The aborts for this loop published after `cursor`, and the new cursor."""


def tree_signature(root: Path) -> tuple[int, int]:
    """(newest mtime in ns, number of entries) of the files under `root`, without `.git`.
    A write, a new file or a removed one changes it; cheap enough for once a heartbeat."""
    newest = count = 0
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name == ".git":
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                except OSError:
                    continue
                count += 1
                newest = max(newest, st.st_mtime_ns)
    return newest, count


@dataclass
class AgentRun:
    """One agent run of an iteration, as the heartbeat reports it (thread-safe)."""

    task_id: str
    iteration: int
    started_at: datetime
    cancel: threading.Event = field(default_factory=threading.Event)
    activity_at: datetime | None = None
    activity: AgentSign = AgentSign.STARTED
    pid: int | None = None
    abort: IterationAbort | None = None  # the command that killed it, if one did
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sign(self, sign: AgentSign, at: datetime) -> None:
        with self._lock:
            self.activity_at, self.activity = at, sign

    def spawned(self, pid: int) -> None:
        with self._lock:
            if self.pid is None:  # the first process is the agent (later: a retry's)
                self.pid = pid

    def meant_by(self, command: IterationAbort) -> bool:
        """True if `command` is for this run: same task, and the same start (or none)."""
        return command.task_id == self.task_id and (
            command.agent_started_at is None or command.agent_started_at == self.started_at
        )

    def snapshot(self) -> tuple[datetime, datetime | None, AgentSign, int | None]:
        """The heartbeat's `agent_*` fields: started, last sign's time, that sign, pid."""
        with self._lock:
            return self.started_at, self.activity_at, self.activity, self.pid


class RunWatch(threading.Thread):
    """Beside one agent run: mirrors `stop` into the run's cancel, scans the work tree
    every `scan_s`, and reads `feed` for an abort every `ABORT_POLL_S`."""

    def __init__(
        self,
        run: AgentRun,
        *,
        worktree: Path,
        clock: Callable[[], datetime],
        scan_s: float,
        stop: threading.Event | None,
        feed: AbortFeed | None,
        cursor: str | None,
        handled: Callable[[str], bool],
        on_error: Callable[[BaseException], None],
    ) -> None:
        super().__init__(name=f"run-watch-{run.task_id}", daemon=True)
        self.run_ = run
        self.worktree = worktree
        self.clock = clock
        self.scan_s = scan_s
        self.stop = stop
        self.feed = feed
        self.cursor = cursor
        self.handled = handled
        self.on_error = on_error
        self.done = threading.Event()
        self.signature = tree_signature(worktree)  # before the agent starts

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=5)

    def run(self) -> None:
        next_scan = next_feed = time.monotonic()
        while not self.done.wait(CANCEL_POLL_S):
            if self.stop is not None and self.stop.is_set():
                self.run_.cancel.set()
            now = time.monotonic()
            try:
                if now >= next_scan:
                    next_scan = now + self.scan_s
                    self._scan()
                if self.feed is not None and self.cursor is not None and now >= next_feed:
                    next_feed = now + ABORT_POLL_S
                    self._read_feed()
            except Exception as exc:  # a missed look must not kill the run; it is logged
                self.on_error(exc)

    def _scan(self) -> None:
        signature = tree_signature(self.worktree)
        if signature != self.signature:
            self.signature = signature
            self.run_.sign(AgentSign.FILE_CHANGE, self.clock())

    def _read_feed(self) -> None:
        assert self.feed is not None and self.cursor is not None
        self.cursor, commands = self.feed.since(self.cursor)
        for command in commands:
            fresh = self.run_.abort is None and not self.handled(command.id)
            if fresh and self.run_.meant_by(command):
                self.run_.abort = command
                self.run_.cancel.set()
