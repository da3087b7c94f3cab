"""One role per process (distributed mode, what docker-compose runs):

    loops worker LOOP | worker --all | gate | merge | monitor | pm | human | dashboard

Each reaches the bus through `--redis`, `$REDIS_URL`, or the embedded server of the
project in `--dir`; keeps a presence key for `loops health ROLE`; and stops cleanly on
SIGTERM/SIGINT. What each role runs is `app.roles`.
"""

from __future__ import annotations

import argparse
import threading
from functools import partial
from pathlib import Path

from agents.runner import run as run_agent
from app.metrics import metrics_address
from app.roles import RoleOptions, Step, role_agent, role_step, select_loop
from app.runtime import run_role
from app.system import SystemOptions
from bus import RedisBus
from bus.settings import warn_if_unsigned
from cli.context import load_checked, open_bus, project_dir, repo_and_main, settings_of
from cli.running import run_system
from events import ConfigError
from infra.settings import Settings


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    config = Path(args.config).resolve() if getattr(args, "config", None) else None
    if config is not None and not config.is_file():
        raise ConfigError(f"--config {args.config}: no such file")
    if config is not None and args.loop is None and getattr(args, "project_dir", None) is None:
        directory = config.parent.parent  # DIR/loop-x/config.json
    else:
        directory = project_dir(getattr(args, "project_dir", None), settings)
    if args.command == "worker" and not (args.redis or settings.redis_url):
        # The loop alone on this machine, with its gate and merge queue (and the monitor,
        # PM and human interface), like `loops up` for one loop.
        project = load_checked(directory, settings)
        only = None
        if not args.all:
            project, loop = select_loop(project, args.loop, config, args.model)
            only = frozenset({loop.name})
        options = SystemOptions(
            agent=args.agent,
            model=args.model,
            max_iterations=args.max_iterations,
            only=only,
            settings=settings,
        )
        return run_system(directory, project, options)
    with open_bus(args) as bus:
        bus.client.ping()
        warn_if_unsigned(bus.settings)
        step, name = _role(args, bus, directory, config, settings)
        return run_role(
            name,
            None,
            bus.client,
            step,
            stop=threading.Event(),
            prefix=bus.prefix,
            metrics=metrics_address(args.metrics_port, args.metrics_host, settings),
        )


def _role(
    args: argparse.Namespace, bus: RedisBus, directory: Path, config: Path | None, s: Settings
) -> tuple[Step, str]:
    role = args.command
    if role in ("monitor", "pm", "human"):
        agent = role_agent(role, bus, s, partial(load_checked, directory, s))
        return (lambda stop: run_agent(agent, bus, stop, group=role)), role
    project = load_checked(directory, s)
    repo, main = repo_and_main(directory, project)
    loop = None
    if role == "worker" and args.all and (args.loop or config):
        raise ConfigError("loops worker --all runs every loop: name no LOOP and no --config")
    if role == "worker" and not args.all:
        project, loop = select_loop(project, args.loop, config, args.model)
    options = RoleOptions(
        agent=getattr(args, "agent", None),
        model=getattr(args, "model", None),
        max_iterations=getattr(args, "max_iterations", None),
        test_command=getattr(args, "test_command", None),
    )
    return role_step(role, bus, project, repo, main, s, options, loop)
