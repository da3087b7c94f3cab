"""Every role of coding-loops in one process: what `loops up` and `loops demo` run.

Each role polls its own subscription on its own thread, exactly as it would in its
own process (`loops gate|merge|monitor|pm|human|dashboard`). The loops share one
subscription (`bus.Router`, one consumer group for the set of loops this process
runs), which hands each event to the loops it concerns: a published event costs the
same Redis calls at 100 loops as at 10, and idle loops hold no connection. The
supervisor here only starts, restarts (when the monitor asks) and stops them, and
decides when no loop can make progress any more.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from agents.runner import run as run_agent
from app.compose import (
    ProcessJobs,
    Threads,
    loader_with_fallback,
    make_human,
    make_monitor,
    make_pm,
    monitor_policy,
    wire,
)
from bus import CONNECTION_ERRORS, RedisBus, Router
from events import BudgetLevel, ConfigError, Event, LoopResume, LoopStop
from events.view import SystemView
from infra.settings import Settings, secret
from loops.books import HarnessBook
from loops.budget_config import effective
from loops.driver import WorkerExit
from loops.project import Project
from loops.reactions import WORKER_TYPES
from loops.service import BROADCAST_TYPES, WorkerService

log = logging.getLogger("loops.system")

LOOP_REPORTS = frozenset({"loop.started", "loop.heartbeat", "loop.stopped"})


@dataclass
class SystemOptions:
    agent: str | None = None  # overrides every loop's agent
    heartbeat_s: float | None = None  # default: each loop's health_check.interval_seconds
    monitor_tick_s: float = 0.5
    dashboard: tuple[str, int] | None = None  # (host, port)
    dashboard_token: str | None = None
    test_command: str | None = None  # run on every merged tree (else project.json's)
    model: str | None = None  # overrides every loop's model (`--model`)
    max_iterations: int | None = None  # agent runs per loop in this run (`--max-iterations`)
    only: frozenset[str] | None = None  # run these loops only (`loops worker` embedded)
    max_cost: float | None = None  # the project's dollar budget for this run (`--max-cost`)
    max_tokens: int | None = None  # the project's token budget for this run (`--max-tokens`)
    # The process's settings (`main` builds them and passes them down; default: the
    # defaults, no environment). Their `job_processes`: verification jobs in worker
    # processes (other cores), else in the gate's thread.
    settings: Settings = field(default_factory=Settings)


@dataclass
class LoopSlot:
    name: str
    make: Callable[[], WorkerService]
    service: WorkerService | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    exits: list[WorkerExit] = field(default_factory=list)
    restart_wanted: bool = False
    restarts: int = 0
    pending_start: bool = False  # its start failed on a lost Redis: supervise() retries
    spawned_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class System:
    """The whole system on one machine, against one bus."""

    def __init__(
        self, project: Project, bus: RedisBus, repo: Path, main: str, options: SystemOptions
    ) -> None:
        self.project = project
        self.bus = bus
        self.repo = repo
        self.main = main
        self.options = options
        self.roles = Threads()
        self.slots = {
            lp.name: LoopSlot(lp.name, self._factory(lp.name))
            for lp in project.loops
            if options.only is None or lp.name in options.only
        }
        self.dashboard_url: str | None = None
        self.router: Router | None = None
        # The loops as their events tell (the read model): what `idle()` decides from.
        self.view = SystemView()
        self._view_lock = threading.Lock()
        self.policy = monitor_policy(project, options.settings)  # a bad file stops us first
        self.jobs = ProcessJobs() if options.settings.job_processes else None
        self.wiring = wire(
            bus,
            repo,
            main,
            options.settings,
            # A task added to a state file by hand and not committed yet runs too: its
            # criteria as the operator's files say at start (before any agent ran).
            loader=loader_with_fallback(project.criteria_snapshot()),
            project=project.config,
            test_command=options.test_command,
            jobs=self.jobs,
        )

    # ------------------------------------------------------------------ wiring
    def _factory(self, name: str) -> Callable[[], WorkerService]:
        loop = self.project.loop(name)
        if self.options.model:  # precedence: flag, then the loop's config, then the agent's
            loop = replace(
                loop, config=loop.config.model_copy(update={"model": self.options.model})
            )

        def make() -> WorkerService:
            return self.wiring.worker(
                HarnessBook(loop, max_iterations=self.options.max_iterations),
                self.options.agent or loop.config.agent or "claude",
                model=loop.config.model,
                base_dir=loop.dir,
                heartbeat_s=self.options.heartbeat_s or loop.config.health_check.interval_seconds,
                inbox=self.router.inbox(name) if self.router else None,
                prices=self.project.config.prices,
                budget=effective(
                    self.project.config.budget,
                    loop.config.budget,
                    max_usd=self.options.max_cost,
                    max_tokens=self.options.max_tokens,
                    flags_level=BudgetLevel.PROJECT,
                ),
                loop=loop,  # its agent here or on LOOPS_AGENT_QUEUE (`app.fleet`)
            )

        return make

    def start(self) -> None:
        # The dashboard first: a taken port is one clear line before anything runs.
        if self.options.dashboard:
            self._start_dashboard(*self.options.dashboard)
        # One gate consumer per job process, as if that many `loops gate` processes ran:
        # claims are shared out by their group, and verifications run side by side.
        for i in range(self.jobs.workers if self.jobs else 1):
            name = "gate" if i == 0 else f"gate-{i}"
            gate = self.wiring.gate(instance=name)
            self.roles.poll_forever(name, gate.subscribe("up" if i == 0 else f"up-{i}"))
        self.roles.poll_forever("merge", self.wiring.merge().subscribe("up"))
        self._start_agents()
        supervisor = self.bus.subscribe(
            "supervisor", "up", self._on_event, types={"loop.stop", "loop.resume", *LOOP_REPORTS}
        )
        self.roles.poll_forever("supervisor", supervisor)
        if self.slots:
            self.router = Router(
                self.bus,
                self.slots,
                consumer="up",  # a restarted `loops up` takes its pending entries back
                types=WORKER_TYPES,
                broadcast=BROADCAST_TYPES,
            )
            self.roles.poll_forever("router", self.router.subscription)
        for slot in self.slots.values():
            self._start_worker(slot)

    def _start_worker(self, slot: LoopSlot) -> None:
        """Build and start the loop's service; a lost Redis while building it (the
        replay, the group) is logged and retried by `supervise()`."""
        try:
            self._spawn(slot)
        except CONNECTION_ERRORS as exc:
            log.warning("loop %s could not start (lost Redis: %s); retrying", slot.name, exc)
            slot.pending_start = True
            slot.thread = None

    def _start_agents(self) -> None:
        tick = self.options.monitor_tick_s
        settings = self.options.settings
        monitor = make_monitor(self.bus, settings, self.project, self.policy)
        pm = make_pm(self.bus, self.project)
        human = make_human(self.bus, settings)
        for group, agent in (("monitor", monitor), ("pm", pm), ("human", human)):
            self.roles.start(
                group,
                lambda a=agent, g=group: run_agent(  # type: ignore[misc]
                    a, self.bus, self.roles.stop, group=g, consumer="up", tick_s=tick
                ),
            )

    def _start_dashboard(self, host: str, port: int) -> None:
        from app.dashboard import resolve_token, serve

        busy = port and not _port_free(host, port)
        if busy:  # another project's dashboard, say: take a free port, never refuse to start
            log.warning("dashboard port %d is busy: using a free port", port)
            port = 0
        configured = secret(self.options.settings.dashboard_token)
        token, token_file = resolve_token(self.project.root, configured)
        token = self.options.dashboard_token or token
        ready = threading.Event()

        def on_ready(url: str) -> None:
            # The token itself never goes to the terminal or a log (invariant 7).
            where = f"token in {token_file}" if token_file else "token from $LOOPS_DASHBOARD_TOKEN"
            note = (
                f"; port {self.options.dashboard[1]} was busy"
                if busy and self.options.dashboard
                else ""
            )
            self.dashboard_url = f"{url}  ({where}{note})"
            ready.set()

        self.roles.start(
            "dashboard",
            lambda: serve(self.bus, host, port, token, self.roles.stop, on_ready=on_ready),
        )
        deadline = time.monotonic() + 15
        while not ready.wait(0.05):
            if self.roles.errors:
                raise self.roles.errors[0]
            if time.monotonic() > deadline:
                raise ConfigError(f"the dashboard did not start on {host}:{port}")

    def _spawn(self, slot: LoopSlot) -> None:
        slot.pending_start = False
        slot.stop = threading.Event()
        slot.restart_wanted = False
        slot.spawned_at = datetime.now(UTC)  # its `loop.started` comes after this
        slot.service = slot.make()
        service = slot.service

        def body() -> None:
            try:
                slot.exits.append(service.run(slot.stop))
            except Exception:
                # The loop is dead; the monitor sees its heartbeat go stale and decides.
                log.exception("loop %s crashed", slot.name)

        slot.thread = threading.Thread(target=body, name=f"worker-{slot.name}", daemon=True)
        slot.thread.start()

    def _on_event(self, event: Event) -> None:
        if event.type in LOOP_REPORTS:
            with self._view_lock:
                self.view.apply(event)
            return
        if isinstance(event, LoopStop) and event.restart and event.loop in self.slots:
            self.slots[event.loop].restart_wanted = True
        elif isinstance(event, LoopResume) and event.loop in self.slots:
            # `loops stop` then `loops resume`: the stopped loop starts again and its
            # new worker acknowledges the resume (waiting in the loop's inbox).
            slot = self.slots[event.loop]
            worker = slot.service.worker if slot.service else None
            if not slot.alive or (worker is not None and worker.stop_requested):
                slot.restart_wanted = True

    # ------------------------------------------------------------------ supervision
    def supervise(self) -> None:
        """Restart loops the monitor asked to restart (alive ones restart themselves)."""
        if self.roles.errors:
            raise self.roles.errors[0]
        for slot in self.slots.values():
            if slot.alive or self.roles.stop.is_set():
                continue
            if slot.pending_start:
                self._start_worker(slot)
                continue
            asked = slot.restart_wanted or (slot.exits and slot.exits[-1].restart)
            if asked:
                slot.restarts += 1
                log.warning("restarting loop %s (restart %d)", slot.name, slot.restarts)
                self._start_worker(slot)

    def idle(self) -> bool:
        """No loop can make progress: every task merged, blocked, or waiting on a person
        (a claim being verified or merged counts as progress), as the loops' own events
        say (`LoopView.settled`), so `loops status` sees the same."""
        with self._view_lock:
            for slot in self.slots.values():
                if slot.restart_wanted or slot.pending_start:
                    return False
                if not slot.alive:
                    continue
                loop = self.view.loops.get(slot.name)
                if loop is None or not loop.settled(slot.spawned_at):
                    return False
        return True

    def run_until_idle(
        self,
        settle_s: float = 1.5,
        on_tick: Callable[[], None] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """Supervise until no loop can progress for `settle_s` (and `busy` is false)."""
        idle_since: float | None = None
        while True:
            try:
                self.supervise()
                if on_tick:
                    on_tick()
                idle = self.idle() and not busy()
            except CONNECTION_ERRORS as exc:
                log.warning("supervisor lost Redis (%s); retrying", exc)
                idle = False
            if idle:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle_s:
                    return
            else:
                idle_since = None
            time.sleep(0.1)  # supervision cadence, not synchronisation

    def shutdown(self, timeout: float = 30.0) -> None:
        for slot in self.slots.values():
            slot.stop.set()
        for slot in self.slots.values():
            if slot.thread:
                slot.thread.join(timeout=timeout)
        self.roles.shutdown(timeout=timeout)
        if self.jobs is not None:
            self.jobs.close()


def _port_free(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now (SO_REUSEADDR, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
