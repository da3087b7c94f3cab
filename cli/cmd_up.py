"""`loops up [DIR] [--redis URL] [--agent A] [--test-command CMD] [--serve] [--host H]
[--port P]`.

Runs every loop in DIR (seed layout: DIR/loop-*/config.json) with the gate, the merge
queue, the monitor, the PM, the human interface and the dashboard. Without --serve it
returns when no loop can progress, with a summary; exit 0 only if every task merged.
"""

from __future__ import annotations

import argparse

from app.system import SystemOptions
from cli.context import load_checked, project_dir, settings_of
from cli.running import run_system


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    directory = project_dir(args.dir, settings)
    project = load_checked(directory, settings)
    options = SystemOptions(
        agent=args.agent,
        dashboard=(args.host, args.port) if args.port else None,
        model=args.model,
        max_iterations=args.max_iterations,
        test_command=args.test_command,
        max_cost=args.max_cost,
        max_tokens=args.max_tokens,
        settings=settings,
    )
    return run_system(directory, project, options, redis_url=args.redis, serve=args.serve)
