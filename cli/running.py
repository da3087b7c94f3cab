"""Running the whole system in this process (`loops up`, `loops worker` without a
Redis, `loops demo`): one per directory (`up_lock`), logs to a file on a terminal, the
live table, and the summary at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from app.compose import check_sandboxes
from app.system import System, SystemOptions
from bus import CONNECTION_ERRORS, RedisBus
from cli.context import open_system_bus, repo_and_main
from cli.fmt import render
from events import ConfigError
from events.secrets import RedactingFilter
from events.view import SystemView, TaskStatus
from events.view.summary import up_summary
from infra.files import FileLock
from loops.project import Project

log = logging.getLogger("loops.up")


@contextlib.contextmanager
def up_lock(directory: Path) -> Iterator[None]:
    """One `loops up` per directory: a second one refuses with a clear message."""
    state = directory / ".loops"
    state.mkdir(exist_ok=True)
    lock = FileLock(state / "up.lock")
    if not lock.acquire(wait=False):
        raise ConfigError(
            f"another `loops up` or `loops worker` is already running on {directory} "
            f"(pid {lock.holder() or '?'}); watch it with `loops status`, or stop it first "
            "(to run several loops together on one machine, use one `loops up`)"
        )
    try:
        lock.note(str(os.getpid()))
        yield
    finally:
        lock.release()


class LoopNames(logging.Filter):
    """Prefixes a log line of a loop's threads (`worker-LOOP`, `heartbeat-LOOP`) with
    `[LOOP]` when it does not name its loop: with many loops in one log, every line says
    whose it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        thread = record.threadName or ""
        _, sep, loop = thread.partition("-")
        if sep and thread.startswith(("worker-", "heartbeat-")):
            message = record.getMessage()
            if not re.search(rf"(?<![\w-]){re.escape(loop)}(?![\w-])", message):
                record.msg, record.args = f"[{loop}] {message}", None
        return True


def name_loops_in_logs() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LoopNames) for f in handler.filters):
            handler.addFilter(LoopNames())


def logs_to_file_on_a_terminal(directory: Path) -> Path | None:
    """On a terminal the live table owns the screen: logs go to `.loops/loops.log`."""
    if not sys.stdout.isatty():
        return None
    path = directory / ".loops" / "loops.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # invariant 7: no secret in the log file
    root.addHandler(handler)
    return path


class LiveTable:
    """The terminal view while `loops up` runs: a redrawn table on a TTY, a line per
    change elsewhere (logs, CI)."""

    def __init__(self, bus: RedisBus, interval_s: float = 1.0) -> None:
        self.bus = bus
        self.view = SystemView.from_events(e for _, e in bus.replay())
        self.cursor = bus.last_id()
        self.interval_s = interval_s
        self.tty = sys.stdout.isatty()
        self._last = 0.0
        self._last_line = ""

    def tick(self) -> None:
        """Fold in new events and redraw; a lost Redis skips this tick (the next one
        catches up from the cursor)."""
        try:
            self._fold()
        except CONNECTION_ERRORS as exc:
            log.warning("status table: lost Redis (%s); retrying", exc)
            return
        self._draw()

    def _fold(self) -> None:
        for entry_id, event in self.bus.tail(self.cursor, block_ms=0, count=1000):
            self.view.apply(event)
            self.cursor = entry_id

    def _draw(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        if self.tty:
            sys.stdout.write("\x1b[H\x1b[2J" + render(self.view) + "\n")
            sys.stdout.flush()
            return
        line = " | ".join(
            f"{lv.name}: {sum(t.status is TaskStatus.MERGED for t in lv.tasks.values())}"
            f"/{len(lv.tasks)} {lv.status}"
            for lv in self.view.loops.values()
        )
        if line and line != self._last_line:
            print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", flush=True)
            self._last_line = line


def summary(system: System, bus: RedisBus) -> tuple[int, list[str]]:
    """The summary and exit code, from the stream as `loops status` reads it."""
    view = SystemView.from_events(bus.replay())
    return up_summary(view, {s.name: s.spawned_at for s in system.slots.values()})


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, `docker stop`, `kill`) stops `loops up` as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_system(
    directory: Path,
    project: Project,
    options: SystemOptions,
    *,
    redis_url: str | None = None,
    serve: bool = False,
) -> int:
    """Run `project` (every loop, or `options.only`) with every role on this machine until
    no loop can progress (or, with `serve`, until stopped); print the summary; exit code."""
    stop_on_sigterm()
    repo, main = repo_and_main(directory, project)
    running = [lp for lp in project.loops if options.only is None or lp.name in options.only]
    for warning in check_sandboxes(lp.config.sandbox for lp in running):
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    log_file = logs_to_file_on_a_terminal(directory)
    name_loops_in_logs()
    with up_lock(directory), open_system_bus(redis_url, directory, options.settings) as bus:
        system = System(project, bus, repo, main, options)
        table = LiveTable(bus)
        code = 1
        try:
            system.start()
            if system.dashboard_url:
                print(f"dashboard: {system.dashboard_url}", flush=True)
            if serve:
                while True:
                    try:
                        system.supervise()
                    except CONNECTION_ERRORS as exc:
                        log.warning("supervisor lost Redis (%s); retrying", exc)
                    table.tick()
                    time.sleep(0.2)  # supervision cadence
            system.run_until_idle(on_tick=table.tick)
        except KeyboardInterrupt:
            print(
                "\nstopping: finishing in-flight work, writing state ...",
                file=sys.stderr,
                flush=True,
            )
        finally:
            system.shutdown()
        code, lines = summary(system, bus)
        if log_file:
            lines.append(f"Logs: {log_file}")
        print("\n".join(lines), flush=True)
        return code
