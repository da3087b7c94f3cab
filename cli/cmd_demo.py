"""`loops demo [--agent A] [--dir DIR]`: the README's first command.

Creates the demo repository (app/demo.py), runs the whole system on it with the
embedded bus, plays the person who answers the one question, and ends with what
happened and where to look.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from app import demo
from app.system import System, SystemOptions
from bus import RedisBus
from cli.context import load_checked, open_system_bus, repo_and_main, settings_of
from cli.running import LiveTable, logs_to_file_on_a_terminal, summary, up_lock
from events import (
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    MergeCompleted,
    MonitorAction,
    Role,
    Source,
    TaskClaimed,
    TaskStarted,
    VerificationFailed,
)

ANSWER_PAUSE_S = 3.0


def run(args: argparse.Namespace) -> int:
    agent = args.agent
    if agent == "claude" and shutil.which("claude") is None:
        print("loops demo: --agent claude needs the `claude` CLI on PATH", file=sys.stderr)
        return 1
    root = Path(args.demo_dir) if args.demo_dir else Path(tempfile.mkdtemp(prefix="loops-demo-"))
    if root.exists() and any(root.iterdir()):
        print(f"loops demo: {root} is not empty; pass --dir with a new directory", file=sys.stderr)
        return 1
    demo.create(root, agent=agent)
    print(f"Demo repository: {root}\n", flush=True)
    log_file = logs_to_file_on_a_terminal(root)
    settings = settings_of(args)
    project = load_checked(root, settings)
    repo, main = repo_and_main(root, project)
    with up_lock(root), open_system_bus(None, root, settings, from_env=False) as bus:
        system = System(project, bus, repo, main, SystemOptions(heartbeat_s=1.0, settings=settings))
        person = DemoPerson(bus, system.roles.stop)
        table = LiveTable(bus, interval_s=1.0)
        started = time.monotonic()
        try:
            system.start()
            person.thread.start()
            system.run_until_idle(on_tick=table.tick, busy=lambda: person.busy)
        finally:
            system.shutdown()
            person.thread.join(timeout=5)
        code, lines = summary(system, bus)
        print("\n".join(lines))
        print("\nWhat happened:")
        for line in story(e for _, e in bus.replay()):
            print(f"  {line}")
        print(f"\nDone in {time.monotonic() - started:.0f}s. Inspect the result:")
        print(f"  git -C {root} log --oneline main")
        print(f"  cat {root}/loop-*/specs/test-state.json | jq .summary")
        if log_file:
            print(f"  less {log_file}")
        return code


class DemoPerson:
    """Answers the demo's question after a pause, as a person would from a terminal.
    `busy` while a question is waiting for its answer, so the run does not end first."""

    def __init__(self, bus: RedisBus, stop: threading.Event) -> None:
        self.bus = bus
        self.stop = stop
        self.busy = False
        self.thread = threading.Thread(target=self._run, name="demo-person", daemon=True)

    def _run(self) -> None:
        me = Source(role=Role.OPERATOR, instance="demo-person")
        cursor = "0"
        while not self.stop.is_set():
            for entry_id, event in self.bus.tail(cursor, block_ms=200):
                cursor = entry_id
                if not (
                    isinstance(event, EscalationRaised) and event.kind is EscalationKind.QUESTION
                ):
                    continue
                if event.repeat:
                    continue
                self.busy = True
                if self.stop.wait(ANSWER_PAUSE_S):
                    return
                print(f'\n$ loops answer {event.escalation_id} "{demo.DEMO_ANSWER}"', flush=True)
                self.bus.publish(EscalationAnswered(
                    source=me, loop=event.loop, escalation_id=event.escalation_id,
                    task_id=event.task_id, answer=demo.DEMO_ANSWER, by="demo person",
                ))  # fmt: skip
                self.busy = False


def story(events: object) -> list[str]:
    """The demo's behaviours, as the event log shows them."""
    claims: dict[tuple[str | None, str], int] = {}
    lines: list[str] = []
    touched: dict[str, set[str]] = {}
    waiting_on = {"loop-4-question": demo.DEPENDS["DIV-1"]}
    for event in events:  # type: ignore[attr-defined]
        assert isinstance(event, Event)
        if isinstance(event, TaskClaimed):
            claims[(event.loop, event.task_id)] = claims.get((event.loop, event.task_id), 0) + 1
        elif isinstance(event, VerificationFailed):
            failed = [c.criterion for c in event.criteria if c.passed is False]
            lines.append(
                f"gate caught a false claim: {event.loop}/{event.task_id} "
                f"({', '.join(failed) or event.reason})"
            )
        elif isinstance(event, MonitorAction):
            lines.append(
                f"monitor: {event.action.value} on {event.loop}/{event.task_id or '-'} "
                f"({event.rule}: {event.reason})"
            )
        elif isinstance(event, EscalationRaised) and not event.repeat:
            lines.append(f"question from {event.loop}/{event.task_id}: {event.question}")
        elif isinstance(event, EscalationAnswered):
            lines.append(f"answered by {event.by}: {event.answer}")
        elif isinstance(event, TaskStarted) and event.loop in waiting_on:
            lines.append(
                f"{event.loop}/{event.task_id} started once {waiting_on.pop(event.loop)} "
                "had merged (cross-loop dependency)"
            )
        elif isinstance(event, MergeCompleted):
            lines.append(f"merged: {event.loop}/{event.task_id} as {event.merged_commit[:10]}")
        if hasattr(event, "changed_files") and event.loop:
            for path in getattr(event, "changed_files", []):
                touched.setdefault(path, set()).add(event.loop)
    for path, loops in sorted(touched.items()):
        if len(loops) > 1:
            lines.append(
                f"{path} was changed by {', '.join(sorted(loops))}: all merged through the queue"
            )
    return lines
