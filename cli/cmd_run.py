"""`loops run [SPEC] [-n N] [-v] [--agent A] [--repo DIR] [--test-command CMD]
[--trust-agent]`: ralph_loop,
with one difference: a `<promise>` is verified by the harness before it counts.

The worker, the gate and the merge queue run in this process on the embedded bus
(so `loops events --follow` in another terminal shows the run live). On success the
verified work is on the current branch of the repository, fast-forwarded.
"""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from bus import EmbeddedServer, RedisBus, connect
from cli.compose import (
    Threads,
    check_sandboxes,
    judge_from_env,
    loader_with_fallback,
    make_gate,
    make_merge,
    trusting_loader,
)
from events import (
    ConfigError,
    Event,
    Role,
    Source,
    TaskClaimed,
    VerificationPassed,
)
from events.view import LoopView, SystemView, TaskStatus
from events.view.escalations import Escalation
from loops.books import SpecBook
from loops.runners import make_runner
from loops.service import WorkerService
from loops.spec import load_spec
from loops.workspace import GitError, current_branch, git, repo_root

log = logging.getLogger("loops.run")


class TrustingGate:
    """--trust-agent: ralph_loop's old behaviour. A claim is taken as verified."""

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus
        self.source = Source(role=Role.GATE, instance="trust-agent")

    def handle(self, event: Event) -> None:
        if isinstance(event, TaskClaimed):
            self.bus.publish(
                VerificationPassed(
                    source=self.source,
                    task_id=event.task_id,
                    commit=event.commit,
                    attempt=event.attempt,
                    criteria=[],
                    **event.caused(),
                )
            )


def _repo_for(spec_path: Path, explicit: str | None) -> tuple[Path, str]:
    where = Path(explicit) if explicit else spec_path.resolve().parent
    try:
        repo = repo_root(where)
        branch = current_branch(repo)
        git(repo, "rev-parse", "--verify", "HEAD")
    except GitError:
        raise ConfigError(
            f"{where} is not a git repository with a commit: loops run verifies work on a "
            "clean checkout, so it needs one (git init && git add -A && git commit -m init), "
            "or point --repo at one"
        ) from None
    if branch == "HEAD":
        raise ConfigError(f"{repo} is on a detached HEAD: check out a branch for the verified work")
    return repo, branch


def run(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec_file)
    spec = load_spec(spec_path)
    repo, branch = _repo_for(spec_path, args.repo)
    max_iterations = spec.iterations(args.max_iterations)
    agent = args.agent or "claude"
    log.info(
        "Starting — spec=%r, goal=%r, max_iterations=%d", str(spec_path), spec.goal, max_iterations
    )
    runner = make_runner(agent, base_dir=Path.cwd())
    for warning in check_sandboxes([None]):
        log.warning("%s", warning)
    snapshot = {t.id: list(t.acceptance_criteria) for t in spec.tasks}

    with EmbeddedServer(repo) as server:
        settings = server.settings(prefix="loops")
        client = connect(settings)
        bus = RedisBus(client, settings=settings)
        roles = Threads()
        try:
            book = SpecBook(spec, spec_path, repo / ".loops" / "state", max_iterations)
            service = WorkerService(
                bus,
                book,
                runner,
                repo,
                main_branch=branch,
                heartbeat_s=5.0,
                agent_timeout_s=getattr(args, "agent_timeout", None),
            )
            if args.trust_agent:
                log.warning("--trust-agent: claims are merged without running the checks")
                roles.poll_forever(
                    "gate",
                    bus.subscribe("gate", "run", TrustingGate(bus).handle, types={"task.claimed"}),
                )
            loader = loader_with_fallback(snapshot)
            if not args.trust_agent:
                gate = make_gate(bus, repo, branch, loader, judge=judge_from_env())
                roles.poll_forever("gate", gate.subscribe("run"))
            test_command = getattr(args, "test_command", None)
            if args.trust_agent:  # the merge queue trusts nothing, unless told to here
                merge = make_merge(
                    bus, repo, branch, trusting_loader, test_command=test_command, protected=()
                )
            else:
                merge = make_merge(bus, repo, branch, loader, test_command=test_command)
            roles.poll_forever("merge", merge.subscribe("run"))
            outcome = service.run(threading.Event(), until_idle=True)
        finally:
            roles.shutdown()
            client.close()
        if roles.errors:
            raise roles.errors[0]
        view = SystemView.from_events(bus.replay())
        return _summary(
            view.loop(book.loop),
            escalations=view.waiting_escalations(),
            iterations=service.worker.state.iteration,
            branch=branch,
            all_passed=outcome.all_passed,
        )


def _summary(
    loop: LoopView,
    escalations: list[Escalation],
    iterations: int,
    branch: str,
    all_passed: bool,
) -> int:
    if all_passed:
        log.info(
            "All tasks verified and merged into %r — done in %d iteration(s).", branch, iterations
        )
        return 0
    for task in loop.tasks.values():  # the read model's, as `loops status` shows them
        if task.status is not TaskStatus.MERGED:
            log.error(
                "Task %r is %s%s",
                task.task_id,
                task.status.value,
                f": {task.reason}" if task.reason else "",
            )
    for esc in escalations:
        if esc.kind.value == "signoff":
            log.error("Needs a person's sign-off (%s): %s", esc.id, esc.question)
        else:
            log.error("Open question %s: %s", esc.id, esc.question)
    if escalations:
        log.error(
            "Answer with `loops answer ID TEXT` in this directory, then run `loops run` again."
        )
    return 1
