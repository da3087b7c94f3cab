"""`loops demo [--agent A] [--dir DIR]`: the README's first command.

Creates the demo repository (app/demo.py), runs the whole system on it with the
embedded bus, plays the person who answers the one question (`demo.DemoPerson`), and
ends with what happened (`demo.story`) and where to look.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from app import demo
from app.system import System, SystemOptions
from cli.context import load_checked, open_system_bus, repo_and_main, settings_of
from cli.running import LiveTable, logs_to_file_on_a_terminal, summary, up_lock


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
        person = demo.DemoPerson(bus, system.roles.stop)
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
        for line in demo.story(e for _, e in bus.replay()):
            print(f"  {line}")
        print(f"\nDone in {time.monotonic() - started:.0f}s. Inspect the result:")
        print(f"  git -C {root} log --oneline main")
        print(f"  cat {root}/loop-*/specs/test-state.json | jq .summary")
        if log_file:
            print(f"  less {log_file}")
        return code
