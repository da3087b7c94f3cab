"""`loops up [DIR] [--redis URL] [--agent A] [--test-command CMD] [--serve] [--host H]
[--port P]`.

Runs every loop in DIR (seed layout: DIR/loop-*/config.json) with the gate, the merge
queue, the monitor, the PM, the human interface and the dashboard. Without --serve it
returns when no loop can progress, with a summary; exit 0 only if every task merged.
"""

from __future__ import annotations

import argparse
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

from bus import CONNECTION_ERRORS, BusSettings, EmbeddedServer, RedisBus
from bus.settings import warn_if_unsigned
from cli.cmd_status import render
from cli.compose import check_sandboxes
from cli.system import System, SystemOptions
from events import ConfigError, ValidationFailed
from events.secrets import RedactingFilter
from events.view import SystemView
from events.view.escalations import open_escalations
from events.view.spend import SPEND_TYPES
from infra.files import FileLock
from infra.git import GitError, current_branch, git, repo_root
from loops.project import Project, load_project

log = logging.getLogger("loops.up")


def project_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("CODING_LOOP_PROJECT_DIR") or ".").resolve()


def load_checked(directory: Path) -> Project:
    """The project, or `ValidationFailed` naming every bad file: nothing starts then."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    project = load_project(directory)
    problems = project.dependency_problems()
    if problems:
        raise ValidationFailed(problems, path=str(directory))
    return project


def repo_and_main(directory: Path, project: Project) -> tuple[Path, str]:
    try:
        repo = repo_root(directory)
        git(repo, "rev-parse", "--verify", "HEAD")
    except GitError:
        raise ConfigError(
            f"{directory} is not inside a git repository with a commit: coding-loops merges "
            "verified work into a branch (git init && git add -A && git commit -m init)"
        ) from None
    wanted = {lp.config.main_branch for lp in project.loops if lp.config.main_branch}
    if len(wanted) > 1:
        raise ConfigError(f"loops disagree on main_branch ({', '.join(sorted(wanted))}): pick one")
    main = wanted.pop() if wanted else current_branch(repo)
    if main == "HEAD":
        raise ConfigError(f"{repo} is on a detached HEAD: check out the branch to merge into")
    return repo, main


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
            f"{lv.name}: {sum(t.status.value == 'merged' for t in lv.tasks.values())}"
            f"/{len(lv.tasks)} {lv.status}"
            for lv in self.view.loops.values()
        )
        if line and line != self._last_line:
            print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", flush=True)
            self._last_line = line


def summary(system: System, bus: RedisBus) -> tuple[int, list[str]]:
    lines = ["", "Summary:"]
    for slot in system.slots.values():
        worker = slot.service.worker if slot.service else None
        if worker is None:
            continue
        # What merged on main (the durable record, or the merge's trailer on main), not
        # what the state file says: an agent or a person can write "passed" into it.
        tasks = worker.book.tasks()
        merged = {t.id for t in tasks if worker.passed_and_merged(t.id)}
        lines.append(f"  {slot.name}: {len(merged)}/{len(tasks)} tasks verified and merged")
        for task in tasks:
            if task.id in merged:
                continue
            record = worker.book.record(task.id)
            status = record.status.value
            if status == "passed":
                status = "passed in the state file but not merged on main"
            why = f" — {record.last_result}" if record.last_result else ""
            lines.append(f"    {task.id}: {status}{why}")
            if status in ("blocked", "failed") and worker.book.max_attempts <= record.attempts:
                # Out of attempts: no run takes it up again until a person resets it.
                lines.append(
                    f"      to retry it: `loops reset {slot.name} {task.id} --no-wait` (a "
                    "running loop takes it at once, a stopped one when it starts again)"
                )
    lines += SystemView.from_events(bus.replay(types=SPEND_TYPES)).spend.lines()
    escalations = open_escalations(e for _, e in bus.replay())
    if escalations:
        lines.append("  Open escalations (answer with `loops answer ID TEXT`):")
        for esc in escalations:
            where = f"{esc.loop}/{esc.task_id}" if esc.task_id else esc.loop or "-"
            lines.append(f"    {esc.id} [{esc.severity}] {where}: {esc.question}")
    ok = system.all_passed()
    lines.append("All tasks verified and merged." if ok else "Not every task merged (exit 1).")
    return (0 if ok else 1), lines


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, `docker stop`, `kill`) stops `loops up` as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "dry_run", False):
        from cli.cmd_budget import print_plan

        return print_plan(args)
    directory = project_dir(args.dir)
    project = load_checked(directory)
    options = SystemOptions(
        agent=args.agent,
        dashboard=(args.host, args.port) if args.port else None,
        model=args.model,
        max_iterations=args.max_iterations,
        test_command=args.test_command,
        max_cost=args.max_cost,
        max_tokens=args.max_tokens,
    )
    return run_system(directory, project, options, redis_url=args.redis, serve=args.serve)


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
    with up_lock(directory), open_system_bus(redis_url, directory) as bus:
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


@contextlib.contextmanager
def open_system_bus(
    redis_url: str | None, directory: Path, *, from_env: bool = True
) -> Iterator[RedisBus]:
    """The bus of a system this process runs: `--redis`, `$REDIS_URL`, or an embedded
    server it starts (and stops) for DIR. Key prefix from `$LOOPS_PREFIX`."""
    url = redis_url or (os.environ.get("REDIS_URL") if from_env else None)
    with contextlib.ExitStack() as stack:
        if url:
            settings = BusSettings.from_env(url=url)
        else:
            server = stack.enter_context(EmbeddedServer(directory))
            settings = server.settings()  # its password and the project's signing key
        warn_if_unsigned(settings)
        bus = stack.enter_context(RedisBus.from_settings(settings))
        yield bus
