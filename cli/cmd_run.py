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

from app.compose import Threads, check_sandboxes, loader_with_fallback, wire
from bus import RedisBus
from cli.context import settings_of
from events import ConfigError, EscalationKind
from events.view import SystemView
from events.view.escalations import Escalation, open_escalations
from events.view.spend import SPEND_TYPES
from infra.embedded import EmbeddedServer
from infra.git import GitError, current_branch, git, repo_root
from loops.book import TaskStatus
from loops.books import SpecBook
from loops.budget_config import effective
from loops.spec import load_spec

log = logging.getLogger("loops.run")


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
    settings = settings_of(args)
    for warning in check_sandboxes([None]):
        log.warning("%s", warning)
    snapshot = {t.id: list(t.acceptance_criteria) for t in spec.tasks}

    with EmbeddedServer(repo) as server:
        bus = RedisBus.from_settings(server.settings(prefix="loops"))
        roles = Threads()
        try:
            book = SpecBook(spec, spec_path, repo / ".loops" / "state", max_iterations)
            wiring = wire(
                bus,
                repo,
                branch,
                settings,
                loader=loader_with_fallback(snapshot),
                test_command=getattr(args, "test_command", None),
                trust_agent=args.trust_agent,
            )
            service = wiring.worker(
                book,
                agent,
                base_dir=Path.cwd(),
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
            roles.poll_forever("gate", wiring.gate().subscribe("run"))
            roles.poll_forever("merge", wiring.merge().subscribe("run"))
            outcome = service.run(threading.Event(), until_idle=True)
            for line in SystemView.from_events(bus.replay(types=SPEND_TYPES)).spend.lines():
                log.info("%s", line.strip())
        finally:
            roles.shutdown()
            bus.close()
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
        if record.status is not TaskStatus.PASSED:
            log.error(
                "Task %r is %s%s%s%s",
                task.id,
                record.status.value,
                f" ({record.attempts} failed attempts)" if record.attempts else "",
                f": {record.last_result}" if record.last_result else "",
                "" if task.id in waiting else f" — run `{rerun}` to go on (what it tried is kept)",
            )
    for esc in escalations:
        if esc.kind is EscalationKind.SIGNOFF:
            log.error("Needs a person's sign-off (%s): %s", esc.id, esc.question)
        else:
            log.error("Open question %s: %s", esc.id, esc.question)
    if escalations:
        log.error("Answer with `loops answer ID TEXT` in this directory, then run `%s`.", rerun)
    return 1
