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
import shlex
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
from events.view import SystemView
from events.view.escalations import Escalation, open_escalations
from events.view.spend import SPEND_TYPES
from infra.git import GitError, current_branch, git, repo_root
from loops.books import SpecBook
from loops.budget_config import effective
from loops.runners import make_runner
from loops.service import WorkerService
from loops.spec import load_spec

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
                budget=effective(
                    None,
                    max_usd=getattr(args, "max_cost", None),
                    max_tokens=getattr(args, "max_tokens", None),
                ),
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
            for line in SystemView.from_events(bus.replay(types=SPEND_TYPES)).spend.lines():
                log.info("%s", line.strip())
        finally:
            roles.shutdown()
            client.close()
        if roles.errors:
            raise roles.errors[0]
        return _summary(
            book,
            escalations=open_escalations(e for _, e in bus.replay()),
            iterations=service.worker.state.iteration,
            branch=branch,
            all_passed=outcome.all_passed,
            rerun=rerun_command(args),
        )


def rerun_command(args: argparse.Namespace) -> str:
    """The `loops run` that goes on from here, as the person typed it (spec, agent)."""
    words = ["loops", "run"]
    if args.spec_file != "SPEC.yaml":
        words.append(args.spec_file)
    if args.agent:
        words += ["--agent", args.agent]
    if args.repo:
        words += ["--repo", args.repo]
    return shlex.join(words)


def _summary(
    book: SpecBook,
    escalations: list[Escalation],
    iterations: int,
    branch: str,
    all_passed: bool,
    rerun: str = "loops run",
) -> int:
    if all_passed:
        log.info(
            "All tasks verified and merged into %r — done in %d iteration(s).", branch, iterations
        )
        return 0
    waiting = {e.task_id for e in escalations}
    for task in book.tasks():
        record = book.record(task.id)
        if record.status.value != "passed":
            log.error(
                "Task %r is %s%s%s%s",
                task.id,
                record.status.value,
                f" ({record.attempts} failed attempts)" if record.attempts else "",
                f": {record.last_result}" if record.last_result else "",
                "" if task.id in waiting else f" — run `{rerun}` to go on (what it tried is kept)",
            )
    for esc in escalations:
        if esc.kind.value == "signoff":
            log.error("Needs a person's sign-off (%s): %s", esc.id, esc.question)
        else:
            log.error("Open question %s: %s", esc.id, esc.question)
    if escalations:
        log.error("Answer with `loops answer ID TEXT` in this directory, then run `%s`.", rerun)
    return 1
