"""One role per process (distributed mode, what docker-compose runs): the step each
`loops worker LOOP | worker --all | gate | merge | monitor | pm | human` process runs
under `app.runtime.run_role`, built on the one composition (`app.compose.wire`).

Verification jobs go to the rq queue `loops-verify` when `$REDIS_URL` is set, so more
`rq worker loops-verify` processes add capacity.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from agents.runner import Agent
from app.compose import Wiring, make_human, make_monitor, make_pm, monitor_policy, wire
from bus import Inbox, RedisBus, Router, connect
from events import ConfigError, ValidationFailed
from gates import RqJobs
from infra.settings import Settings
from loops.books import HarnessBook
from loops.budget_config import effective
from loops.project import Loop, Project, load_loop
from loops.reactions import WORKER_TYPES
from loops.service import BROADCAST_TYPES, WorkerService

__all__ = ["VERIFY_QUEUE", "RoleOptions", "Step", "role_agent", "role_step", "select_loop"]

VERIFY_QUEUE = "loops-verify"

log = logging.getLogger("loops.roles")

Step = Callable[[threading.Event], None]


@dataclass(frozen=True)
class RoleOptions:
    """What the command asked for (a flag wins over config.json, which wins over the
    default)."""

    agent: str | None = None  # every loop's agent
    model: str | None = None  # every loop's model
    max_iterations: int | None = None  # agent runs per loop in this process
    test_command: str | None = None  # the merge queue's full test suite


def role_agent(
    role: str, bus: RedisBus, settings: Settings, load_project: Callable[[], Project]
) -> Agent:
    """The monitor, the PM or the human interface. The monitor and the PM also work
    without the project's files (no policy file; no priorities or dependencies)."""
    if role == "human":
        return make_human(bus, settings)
    try:
        project: Project | None = load_project()
    except (ValidationFailed, ConfigError) as exc:
        project = None
        if role == "pm":
            log.warning("pm: no project files (%s)", exc)
    if role == "monitor":
        return make_monitor(bus, settings, project, monitor_policy(project, settings))
    return make_pm(bus, project)


def role_step(
    role: str,
    bus: RedisBus,
    project: Project,
    repo: Path,
    main: str,
    settings: Settings,
    options: RoleOptions,
    loop: Loop | None = None,
) -> tuple[Step, str]:
    """What the process of `role` (gate, merge, worker) runs, and its presence name.
    A worker runs `loop` (`select_loop`), or every loop of the project when None."""
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
        test_command=options.test_command,
        jobs=jobs,
    )
    if role == "gate":
        sub = wiring.gate().subscribe(f"gate-{os.getpid()}")
        return (lambda stop: sub.run(stop, block_ms=1000)), "gate"
    if role == "merge":
        merge = wiring.merge().subscribe("merge")
        return (lambda stop: merge.run(stop, block_ms=1000)), "merge"
    if loop is None:
        return _every_loop(options, wiring, project), "worker:all"
    chosen = loop

    def work(stop: threading.Event) -> None:
        # A fresh worker per run: a restart (the monitor's, or after a crash) reloads
        # its state from disk.
        done = _service(options, wiring, project, chosen).run(stop)
        if not done.restart:
            stop.set()  # stopped by a command: the process exits (0)

    return work, f"worker:{loop.name}"


def select_loop(
    project: Project, name: str | None, config: Path | None, model: str | None
) -> tuple[Project, Loop]:
    """The loop `loops worker` runs, with `--config` and `--model` applied (precedence:
    flag, then config.json, then the default), and the project holding it."""
    name = name or (config.parent.name if config is not None else None)
    if name is None:
        raise ConfigError("loops worker: name a LOOP, or give --config PATH/TO/config.json")
    try:
        loop = project.loop(name)
    except KeyError:
        names = ", ".join(lp.name for lp in project.loops)
        raise ConfigError(f"no loop {name!r} in {project.root} (loops: {names})") from None
    if config is not None and config != loop.config_path.resolve():
        loop = load_loop(loop.dir, root=project.root, config_path=config)
    loop = _with_model(loop, model)
    loops = tuple(loop if lp.name == loop.name else lp for lp in project.loops)
    return replace(project, loops=loops), loop


def _with_model(loop: Loop, model: str | None) -> Loop:
    if not model:
        return loop
    return replace(loop, config=loop.config.model_copy(update={"model": model}))


def _service(
    options: RoleOptions, wiring: Wiring, project: Project, loop: Loop, inbox: Inbox | None = None
) -> WorkerService:
    agent = options.agent or loop.config.agent or "claude"
    return wiring.worker(
        HarnessBook(loop, max_iterations=options.max_iterations),
        agent,
        heartbeat_s=loop.config.health_check.interval_seconds,
        loop=loop,
        prices=project.config.prices,
        budget=effective(project.config.budget, loop.config.budget),
        inbox=inbox,
    )


def _every_loop(options: RoleOptions, wiring: Wiring, project: Project) -> Step:
    """`loops worker --all`: every loop of the project, one thread each, in this process
    (what compose's `loops` service runs, so adding a loop needs no YAML), fed by one
    `bus.Router` as `loops up` feeds its loops: one consumer group for the process, not
    one per loop. A loop stopped by a command ends alone; the process exits (0) once
    every loop has; a loop that crashes stops the others and the process exits
    non-zero, for its supervisor to restart it."""
    loops = [_with_model(lp, options.model) for lp in project.loops]
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

        def guarded(what: str, body: Callable[[], None]) -> None:
            try:
                body()
            except BaseException as exc:
                log.exception("%s crashed", what)
                crashed.append(exc)
                stop.set()

        def one(loop: Loop) -> None:
            while not stop.is_set():
                service = _service(options, wiring, project, loop, router.inbox(loop.name))
                if not service.run(stop).restart:
                    return

        threads = [
            threading.Thread(
                target=guarded, args=(f"loop {lp.name}", partial(one, lp)), name=f"worker-{lp.name}"
            )
            for lp in loops
        ]
        routing = threading.Thread(
            target=guarded,
            args=("the router of the loops", lambda: router.subscription.run(stop, block_ms=1000)),
            name="router",
        )
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
