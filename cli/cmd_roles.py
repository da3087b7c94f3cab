"""One role per process (distributed mode, what docker-compose runs):

    loops worker LOOP | worker --all | gate | merge | monitor | pm | human | dashboard

Each reaches the bus through `--redis`, `$REDIS_URL`, or the embedded server of the
project in `--dir`; keeps a presence key for `loops health ROLE`; and stops cleanly on
SIGTERM/SIGINT. Verification jobs go to the rq queue `loops-verify` when `$REDIS_URL`
is set, so more `rq worker loops-verify` processes add capacity.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from agents.human import HumanAgent
from agents.monitor import Monitor
from agents.pm import PMConfig, ProjectManager
from agents.runner import Agent
from agents.runner import run as run_agent
from app.compose import (
    Wiring,
    make_answer_reader,
    make_notifier,
    monitor_policy,
    pm_config,
    wire,
)
from app.metrics import metrics_address
from app.runtime import run_role
from app.system import SystemOptions
from bus import Inbox, PassedLedger, RedisBus, Router, connect
from bus.settings import warn_if_unsigned
from cli.context import load_checked, open_bus, project_dir, repo_and_main, settings_of
from cli.running import run_system
from events import ConfigError, ValidationFailed
from gates import RqJobs
from infra.settings import Settings
from infra.store import Store
from loops.books import HarnessBook
from loops.budget_config import effective
from loops.project import Loop, Project, load_loop
from loops.reactions import WORKER_TYPES
from loops.service import BROADCAST_TYPES, WorkerService

VERIFY_QUEUE = "loops-verify"

log = logging.getLogger("loops.roles")


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.command == "worker":
        config = Path(args.config).resolve() if args.config else None
        if config is not None and not config.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        if config is not None and args.loop is None and getattr(args, "project_dir", None) is None:
            directory = config.parent.parent  # DIR/loop-x/config.json
        else:
            directory = project_dir(getattr(args, "project_dir", None), settings)
        if not (args.redis or settings.redis_url):
            return _embedded_worker(args, directory, config, settings)
    else:
        directory = project_dir(getattr(args, "project_dir", None), settings)
    with open_bus(args) as bus:
        bus.client.ping()
        warn_if_unsigned(bus.settings)
        step, name = _role(args, bus, directory, settings)
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
    args: argparse.Namespace, bus: RedisBus, directory: Path, settings: Settings
) -> tuple[Callable[[threading.Event], None], str]:
    role = args.command
    if role in ("monitor", "pm", "human"):
        agent = _agent(role, bus, directory, settings)
        return (lambda stop: run_agent(agent, bus, stop, group=role)), role
    project = load_checked(directory, settings)
    repo, main = repo_and_main(directory, project)
    jobs = None
    if role == "gate" and settings.redis_url:
        from rq import Queue

        # Compose's setup (`REDIS_URL`, where `rq worker loops-verify` runs), on the bus's
        # own connection (its URL, password and timeouts, never retried).
        jobs = RqJobs(Queue(VERIFY_QUEUE, connection=connect(bus.settings)))
    wiring = wire(
        bus,
        repo,
        main,
        settings,
        project=project.config,
        remote=settings.remote,
        test_command=getattr(args, "test_command", None),
        jobs=jobs,
    )
    if role == "gate":
        sub = wiring.gate().subscribe(f"gate-{os.getpid()}")
        return (lambda stop: sub.run(stop, block_ms=1000)), "gate"
    if role == "merge":
        sub = wiring.merge().subscribe("merge")
        return (lambda stop: sub.run(stop, block_ms=1000)), "merge"
    if getattr(args, "all", False):
        if args.loop or args.config:
            raise ConfigError("loops worker --all runs every loop: name no LOOP and no --config")
        return _every_loop(args, wiring, project), "worker:all"
    # worker LOOP
    config = Path(args.config).resolve() if args.config else None
    project, loop = _worker_loop(args, project, directory, config)

    def work(stop: threading.Event) -> None:
        # A fresh worker per run: a restart (the monitor's, or after a crash) reloads
        # its state from disk.
        done = _service(args, wiring, project, loop).run(stop)
        if not done.restart:
            stop.set()  # stopped by a command: the process exits (0)

    return work, f"worker:{loop.name}"


def _service(
    args: argparse.Namespace,
    wiring: Wiring,
    project: Project,
    loop: Loop,
    inbox: Inbox | None = None,
) -> WorkerService:
    agent = args.agent or loop.config.agent or "claude"
    w = wiring
    return w.worker(
        HarnessBook(loop, max_iterations=args.max_iterations),
        agent,
        heartbeat_s=loop.config.health_check.interval_seconds,
        loop=loop,
        prices=project.config.prices,
        budget=effective(project.config.budget, loop.config.budget),
        inbox=inbox,
    )


def _every_loop(
    args: argparse.Namespace, wiring: Wiring, project: Project
) -> Callable[[threading.Event], None]:
    """`loops worker --all`: every loop of the project, one thread each, in this process
    (what compose's `loops` service runs, so adding a loop needs no YAML), fed by one
    `bus.Router` as `loops up` feeds its loops: one consumer group for the process, not
    one per loop. A loop stopped by a command ends alone; the process exits (0) once
    every loop has; a loop that crashes stops the others and the process exits
    non-zero, for its supervisor to restart it."""
    loops = [
        lp
        if not args.model
        else replace(lp, config=lp.config.model_copy(update={"model": args.model}))
        for lp in project.loops
    ]
    if not loops:
        raise ConfigError(f"no loops in {project.root} (expected DIR/loop-*/config.json)")

    def fleet(stop: threading.Event) -> None:
        crashed: list[BaseException] = []
        router = Router(
            wiring.bus,
            [lp.name for lp in loops],
            consumer="worker",  # a restarted process takes its pending entries back
            types=WORKER_TYPES,
            broadcast=BROADCAST_TYPES,
        )

        def one(loop: Loop) -> None:
            try:
                while not stop.is_set():
                    inbox = router.inbox(loop.name)
                    service = _service(args, wiring, project, loop, inbox)
                    if not service.run(stop).restart:
                        return
            except BaseException as exc:
                log.exception("loop %s crashed", loop.name)
                crashed.append(exc)
                stop.set()

        def route() -> None:
            try:
                router.subscription.run(stop, block_ms=1000)
            except BaseException as exc:
                log.exception("the router of the loops crashed")
                crashed.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=one, args=(lp,), name=f"worker-{lp.name}") for lp in loops
        ]
        routing = threading.Thread(target=route, name="router")
        for thread in [routing, *threads]:
            thread.start()
        while any(t.is_alive() for t in threads) and not stop.wait(0.5):
            pass
        stop.set()  # every loop stopped by a command, or the process is stopping
        for thread in [*threads, routing]:
            thread.join()
        if crashed:
            raise crashed[0]

    return fleet


def _worker_loop(
    args: argparse.Namespace, project: Project, directory: Path, config: Path | None
) -> tuple[Project, Loop]:
    """The loop `loops worker` runs, with `--config` and `--model` applied (precedence:
    flag, then config.json, then the default), and the project holding it."""
    name = args.loop or (config.parent.name if config is not None else None)
    if name is None:
        raise ConfigError("loops worker: name a LOOP, or give --config PATH/TO/config.json")
    try:
        loop = project.loop(name)
    except KeyError:
        names = ", ".join(lp.name for lp in project.loops)
        raise ConfigError(f"no loop {name!r} in {directory} (loops: {names})") from None
    if config is not None and config != loop.config_path.resolve():
        loop = load_loop(loop.dir, root=project.root, config_path=config)
    if args.model:
        loop = replace(loop, config=loop.config.model_copy(update={"model": args.model}))
    loops = tuple(loop if lp.name == loop.name else lp for lp in project.loops)
    return replace(project, loops=loops), loop


def _embedded_worker(
    args: argparse.Namespace, directory: Path, config: Path | None, settings: Settings
) -> int:
    """`loops worker` with no Redis given: the loop alone on this machine, with its gate and
    merge queue (and the monitor, PM and human interface), like `loops up` for one loop."""
    project = load_checked(directory, settings)
    only = None
    if not getattr(args, "all", False):
        project, loop = _worker_loop(args, project, directory, config)
        only = frozenset({loop.name})
    options = SystemOptions(
        agent=args.agent,
        model=args.model,
        max_iterations=args.max_iterations,
        only=only,
        settings=settings,
    )
    return run_system(directory, project, options)


def _agent(role: str, bus: RedisBus, directory: Path, settings: Settings) -> Agent:
    if role == "monitor":
        try:
            project: Project | None = load_checked(directory, settings)
        except (ValidationFailed, ConfigError):
            project = None  # the monitor also works without the project's files
        policy = monitor_policy(project, settings)
        return Monitor(Store(bus.client, bus.prefix, "monitor"), policy)
    if role == "human":
        return HumanAgent(
            Store(bus.client, bus.prefix, "human"),
            notifier=make_notifier(settings),
            reader=make_answer_reader(settings),
        )
    config = PMConfig()
    try:
        config = pm_config(load_checked(directory, settings))
    except (ValidationFailed, ConfigError) as exc:
        # The PM also works without the project's files (no priorities or dependencies).
        log.warning("pm: no project files (%s)", exc)
    return ProjectManager(config, merged=PassedLedger(bus.client, bus.prefix).all())
