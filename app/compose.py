"""The composition root: builds roles from settings and wires `loops` into `gates`.

`loops`, `gates` and `agents` never import each other; this module is where the gate
gets `loops`' criteria reader, and where in-process roles get their threads.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.answers import AnthropicAnswerReader
from agents.human import HumanAgent
from agents.monitor import Monitor
from agents.pm import PMConfig, ProjectManager
from agents.policy import Policy, load_policy
from agents.refiner import AnthropicRefiner
from agents.webhooks import BackgroundNotifier, WebhookNotifier, WebhookTarget
from app.fleet import agent_runner
from bus import CONNECTION_ERRORS, Inbox, PassedLedger, RedisBus, Subscription
from bus.spend import SpendLedger
from events import ConfigError, Criterion, LoopsError, ModelPrice, Role, Source, ValidationFailed
from gates import (
    DEFAULT_PROTECTED,
    AnthropicJudge,
    BatchMergeQueue,
    CriteriaLoader,
    GateSettings,
    JobRunner,
    Judge,
    MergeQueue,
    MergeSettings,
    TamperPolicy,
    VerificationGate,
)
from gates.checks import DEFAULT_TIMEOUT_S
from gates.errors import JobError
from gates.settings import FlakyPolicy
from gates.trust import TrustingGate, trusting_loader
from infra.model import DEFAULT_MODEL as DEFAULT_JUDGE_MODEL
from infra.settings import Settings, secret
from infra.store import Store
from loops.book import TaskBook
from loops.budget_config import ProjectBudget
from loops.harness import ProjectConfig
from loops.project import Loop, Project, UnknownTask, criteria_for
from loops.runners import make_runner
from loops.sandbox import SandboxConfig, SandboxMode, sandbox_status
from loops.service import WorkerService

log = logging.getLogger("loops.system")


def make_judge(settings: Settings) -> Judge | None:
    """A model judge for natural checks when a key or base URL is configured."""
    if not settings.has_model_api:
        return None
    return AnthropicJudge(
        settings.judge_model or DEFAULT_JUDGE_MODEL,
        api_key=settings.api_key,
        base_url=settings.anthropic_base_url,
    )


def make_answer_reader(settings: Settings) -> AnthropicAnswerReader | None:
    """The model that reads free-text answers the rules cannot, when one is configured."""
    if not settings.has_model_api:
        return None
    return AnthropicAnswerReader(
        model=settings.judge_model,
        api_key=settings.api_key,
        base_url=settings.anthropic_base_url,
    )


def make_refiner(settings: Settings, project: Project) -> AnthropicRefiner | None:
    """The monitor's task refiner, when a model is configured."""
    if not settings.has_model_api:
        return None
    return AnthropicRefiner(
        model=settings.refine_model,
        api_key=settings.api_key,
        base_url=settings.anthropic_base_url,
        describe_task=task_describer(project),
    )


def make_notifier(settings: Settings) -> BackgroundNotifier | None:
    """Webhooks from LOOPS_WEBHOOK_URLS (comma-separated), signed with LOOPS_WEBHOOK_SECRET."""
    urls = settings.webhook_targets
    if not urls:
        return None
    key = secret(settings.webhook_secret) or ""
    return BackgroundNotifier(WebhookNotifier([WebhookTarget(url=u, secret=key) for u in urls]))


def make_monitor(
    bus: RedisBus, settings: Settings, project: Project | None, policy: Policy
) -> Monitor:
    """The monitor, with the task refiner when a model and the project are there."""
    refiner = make_refiner(settings, project) if project is not None else None
    return Monitor(Store(bus.client, bus.prefix, "monitor"), policy, refiner=refiner)


def make_pm(bus: RedisBus, project: Project | None) -> ProjectManager:
    """The PM: priorities and dependencies from the project's files, if any."""
    config = pm_config(project) if project is not None else PMConfig()
    return ProjectManager(config, merged=PassedLedger(bus.client, bus.prefix).all())


def make_human(bus: RedisBus, settings: Settings) -> HumanAgent:
    """The human interface: webhooks, and a model to read free-text answers, if any."""
    return HumanAgent(
        Store(bus.client, bus.prefix, "human"),
        notifier=make_notifier(settings),
        reader=make_answer_reader(settings),
    )


def check_sandboxes(configs: Iterable[SandboxConfig | None]) -> list[str]:
    """The warnings to print before any agent runs (agents unsandboxed, and why), once
    each; `ConfigError` when a loop requires the sandbox and it cannot run here."""
    warnings: list[str] = []
    for config in configs:
        status = sandbox_status(config)
        if status.mode is SandboxMode.REQUIRED and not status.active:
            raise ConfigError(
                f"{status.warning} (sandbox: required) — install bubblewrap "
                "(apt-get install bubblewrap) or set the loop's sandbox mode to auto"
            )
        if status.warning and status.warning not in warnings:
            warnings.append(status.warning)
    return warnings


def loader_with_fallback(fallback: dict[str, list[Criterion]] | None = None) -> CriteriaLoader:
    """`loops`' reader of criteria from a checkout of main. `fallback` (task id, or
    `loop/TASK`, -> criteria) serves a SPEC.yaml that is not committed in main: its criteria were read
    before any agent ran, so the agent still cannot edit its own checks."""

    def load(root: Path, loop: str, task_id: str) -> list[Criterion]:
        try:
            return criteria_for(root, loop, task_id)
        except (UnknownTask, ValidationFailed):
            for key in (f"{loop}/{task_id}", task_id):  # `loops up`'s keys name the loop
                if fallback is not None and key in fallback:
                    return fallback[key]
            raise

    return load


def call_job(func: str, kwargs: dict[str, Any]) -> str:
    """Run the job function `func` (an import path, as rq names it) in this process."""
    module, _, name = func.rpartition(".")
    job: Callable[..., str] = getattr(importlib.import_module(module), name)
    return job(**kwargs)


class ProcessJobs:
    """Runs jobs in worker processes (embedded `loops up`), through the same job
    function an rq worker calls: verification then works on another core instead of
    queueing for the interpreter behind every loop's thread. Processes come from a
    forkserver (never a fork of this threaded process)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(2, os.cpu_count() or 2)
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("forkserver")
        )

    def run(self, func: str, kwargs: dict[str, Any], *, job_id: str, timeout_s: float) -> str:
        with self._lock:
            pool = self._pool
        try:
            return pool.submit(call_job, func, kwargs).result(timeout=timeout_s + 30)
        except concurrent.futures.TimeoutError:
            raise JobError(f"job {job_id} did not finish in {timeout_s:g}s", job_id) from None
        except BrokenProcessPool:
            with self._lock:  # a worker process died (killed): a fresh pool for the next
                if self._pool is pool:
                    self._pool = self._new_pool()
            raise JobError(f"job {job_id}: its worker process died", job_id) from None

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)


def make_gate(
    bus: RedisBus,
    repo: Path,
    main: str,
    loader: CriteriaLoader,
    *,
    remote: str | None = None,
    policy: TamperPolicy = TamperPolicy.ESCALATE,
    default_check: str | None = None,
    judge: Judge | None = None,
    jobs: JobRunner | None = None,
    instance: str = "gate",
    project: ProjectConfig | None = None,
) -> VerificationGate:
    """The gate; `project` (project.json) adds protected globs and the checks' timeout."""
    project = project or ProjectConfig()
    return VerificationGate(
        bus,
        GateSettings(
            repo=repo,
            remote=remote,
            main=main,
            policy=policy,
            default_check=default_check,
            protected=(*DEFAULT_PROTECTED, *project.protected),
            check_timeout_s=project.check_timeout_s or DEFAULT_TIMEOUT_S,
        ),
        loader=loader,
        judge=judge,
        jobs=jobs,
        store=Store(bus.client, f"{bus.prefix}:gate", "gates"),
        spend=SpendLedger(bus.client, bus.prefix),
        source=Source(role=Role.GATE, instance=instance),
    )


def make_merge(
    bus: RedisBus,
    repo: Path,
    main: str,
    loader: CriteriaLoader,
    *,
    remote: str | None = None,
    test_command: str | None = None,
    default_check: str | None = None,
    instance: str = "merge",
    project: ProjectConfig | None = None,
    protected: tuple[str, ...] | None = None,
) -> MergeQueue:
    """The merge queue (batch-and-bisect: `BatchMergeQueue`, which merges a lone claim as
    the one-slot queue does), reloading criteria from main with `loader` (the gate's).
    `test_command` (the CLI's `--test-command`) overrides project.json's; `protected`
    replaces the protected globs (only `loops run --trust-agent` does: it trusts the agent)."""
    project = project or ProjectConfig()
    if protected is None:
        protected = (*DEFAULT_PROTECTED, *project.protected)
    settings = MergeSettings(
        repo=repo,
        remote=remote,
        main=main,
        test_command=test_command or project.test_command,
        default_check=default_check,
        protected=protected,
        check_timeout_s=project.check_timeout_s or DEFAULT_TIMEOUT_S,
        recheck_merged=project.recheck_merged,
        check_workers=project.check_workers,
        batch_size=project.merge_batch_size,
        fill_wait_s=project.merge_fill_wait_s,
        flaky_policy=FlakyPolicy(project.flaky_policy),
        flaky_escalate_after=project.flaky_escalate_after,
        retry_cost_s=project.merge_retry_cost_s,
    )
    return BatchMergeQueue(
        bus,
        settings,
        loader=loader,
        store=Store(bus.client, f"{bus.prefix}:merge", "gates"),
        source=Source(role=Role.MERGE, instance=instance),
    )


@dataclass(frozen=True)
class Wiring:
    """How this process builds the worker, the gate and the merge queue: the one
    composition `loops run`, `loops up` and the role commands share (`wire(...)`)."""

    bus: RedisBus
    repo: Path
    main: str
    settings: Settings
    loader: CriteriaLoader
    project: ProjectConfig = field(default_factory=ProjectConfig)
    remote: str | None = None  # distributed mode: the git remote every role shares
    test_command: str | None = None  # `--test-command` (else project.json's)
    trust_agent: bool = False  # `loops run --trust-agent`
    jobs: JobRunner | None = None

    def gate(self, instance: str = "gate") -> VerificationGate | TrustingGate:
        """The verification gate (or, under `--trust-agent`, the gate that trusts)."""
        if self.trust_agent:
            return TrustingGate(self.bus)
        return make_gate(
            self.bus,
            self.repo,
            self.main,
            self.loader,
            remote=self.remote,
            judge=make_judge(self.settings),
            jobs=self.jobs,
            instance=instance,
            project=self.project,
        )

    def merge(self) -> MergeQueue:
        """The merge queue; under `--trust-agent` it trusts nothing but the operator's
        choice: every task's check is `true` and no path is protected."""
        return make_merge(
            self.bus,
            self.repo,
            self.main,
            trusting_loader if self.trust_agent else self.loader,
            remote=self.remote,
            test_command=self.test_command,
            project=self.project,
            protected=() if self.trust_agent else None,
        )

    def worker(
        self,
        book: TaskBook,
        agent: str,
        *,
        model: str | None = None,
        base_dir: Path | None = None,
        heartbeat_s: float = 30.0,
        agent_timeout_s: float | None = None,
        inbox: Inbox | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        budget: ProjectBudget | None = None,
        loop: Loop | None = None,
    ) -> WorkerService:
        """A loop's worker on `book`, running `agent` (a runner spec): a project's `loop`
        through `app.fleet.agent_runner` (in this process, or as rq jobs on the queue
        `LOOPS_AGENT_QUEUE`: `loops up`, `loops worker`), a spec file's (`loops run`,
        no `loop`) in this process."""
        if loop is not None:
            runner = agent_runner(
                self.bus, loop, agent, self.repo, self.main, self.remote, self.settings
            )
        else:
            runner = make_runner(agent, model=model, base_dir=base_dir, settings=self.settings)
        return WorkerService(
            self.bus,
            book,
            runner,
            self.repo,
            main_branch=self.main,
            heartbeat_s=heartbeat_s,
            agent_timeout_s=agent_timeout_s,
            remote=self.remote,
            inbox=inbox,
            prices=prices,
            budget=budget,
        )


def wire(
    bus: RedisBus,
    repo: Path,
    main: str,
    settings: Settings,
    *,
    loader: CriteriaLoader | None = None,
    project: ProjectConfig | None = None,
    remote: str | None = None,
    test_command: str | None = None,
    trust_agent: bool = False,
    jobs: JobRunner | None = None,
) -> Wiring:
    """The composition of this process's roles on `bus` (see `Wiring`)."""
    return Wiring(
        bus,
        repo,
        main,
        settings,
        loader or loader_with_fallback(),
        project or ProjectConfig(),
        remote=remote,
        test_command=test_command,
        trust_agent=trust_agent,
        jobs=jobs,
    )


@dataclass
class Threads:
    """In-process roles, each polling its own subscription on its own thread."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self, name: str, target: Callable[[], object]) -> None:
        """Run `target` on a thread named `name`. A lost Redis (raised before the role's
        own retry loop, e.g. while it replays or creates its group) starts it again
        after a back-off; any other error is kept for the supervisor."""

        def body() -> None:
            backoff = 0.1
            try:
                while True:
                    try:
                        target()
                        return
                    except CONNECTION_ERRORS as exc:
                        if self.stop.is_set():
                            return
                        log.warning("role %s lost Redis (%s); starting it again", name, exc)
                        if self.stop.wait(backoff):
                            return
                        backoff = min(backoff * 2, 5.0)
            except BaseException as exc:  # re-raised by the supervisor, never swallowed
                if isinstance(exc, LoopsError):
                    log.error("role %s: %s", name, exc)  # a user-facing error: no traceback
                else:
                    log.exception("role %s crashed", name)
                self.errors.append(exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def poll_forever(self, name: str, sub: Subscription, block_ms: int = 200) -> None:
        self.start(name, lambda: sub.run(self.stop, block_ms=block_ms))

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout)


def pm_config(project: Project) -> PMConfig:
    """The PM's view of the project: priorities (config 1 = most urgent, the PM runs the
    highest number first) and every cross-loop dependency of every loop's tests."""
    dependencies: dict[str, list[str]] = {}
    for loop in project.loops:
        for entry in loop.state.tests:
            other = [str(r) for r in loop.dependencies(entry) if r.loop and r.loop != loop.name]
            if other:
                dependencies[f"{loop.name}/{entry.id}"] = other
    return PMConfig(
        priorities={lp.name: -lp.config.priority for lp in project.loops},
        dependencies=dependencies,
    )


def task_describer(project: Project) -> Callable[[str, str], str | None]:
    """What a task asks for, for the monitor's refiner (read from the loop's files)."""

    def describe(loop: str, task_id: str) -> str | None:
        try:
            entry = project.loop(loop).state.task(task_id)
        except KeyError:
            return None
        return "\n".join(t for t in (entry.title, entry.description, entry.notes) if t) or None

    return describe


POLICY_FILE = "monitor-policy.yaml"
POLICY_ENV = "LOOPS_MONITOR_POLICY"  # the `monitor_policy` setting


def policy_file(project: Project | None, settings: Settings) -> Path | None:
    """The monitor's policy file an operator edits: `$LOOPS_MONITOR_POLICY`, else
    `monitor-policy.yaml` beside the loop directories (where project.json goes), if
    there is one. It names only what it changes (see `agents/default-policy.yaml`)."""
    named = settings.monitor_policy
    if named:
        return Path(named)
    if project is None or not project.loops:
        return None
    path = project.loops[0].dir.parent / POLICY_FILE
    return path if path.is_file() else None


def monitor_policy(project: Project | None, settings: Settings) -> Policy:
    """The monitor's policy (`ValidationFailed`, one line per bad field, before anything
    starts): the silence limit of a running agent, the rules' actions, and more."""
    return load_policy(policy_file(project, settings))
