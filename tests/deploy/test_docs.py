"""The docs name tests as evidence for the invariants: those tests must exist."""

from __future__ import annotations

import re

import pytest

from tests.deploy.compose import ROOT

DOCS = ["docs/ARCHITECTURE.md", "docs/OPERATOR-RUNBOOK.md"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_the_doc_names_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    current: str | None = None
    missing = []
    for token in re.findall(r"`([^`]+)`", text):
        named = re.fullmatch(r"(tests/[\w/]+\.py)(?:::(\w+))?", token)
        if named:
            current = named[1]
            if not (ROOT / current).is_file():
                missing.append(current)
                continue
            test = named[2]
        elif token.startswith("::") and current:
            test = token[2:]
        else:
            continue
        if test and f"def {test}(" not in (ROOT / current).read_text():
            missing.append(f"{current}::{test}")
    assert not missing, f"{doc} names tests that do not exist: {missing}"


def test_the_runbooks_agent_machine_commands_parse_as_the_agent_jobs_test_runs_them() -> None:
    """The "more loops on more machines" commands (run, with a private queue name and
    Redis, by tests/deploy/test_agent_jobs.py) parse with the real parsers."""
    import click
    from rq.cli.cli import main as rq_main
    from rq.utils import import_attribute
    from rq.worker import BaseWorker

    from cli.main import build_parser

    text = (ROOT / "docs/OPERATOR-RUNBOOK.md").read_text()
    section = text[text.index("**More loops on more machines:**") :]
    lines = [ln.strip() for ln in section.splitlines()]
    env = "LOOPS_AGENT_QUEUE=loops-agents LOOPS_REMOTE=origin loops "
    coordinator = next(ln for ln in lines if ln.startswith(env))
    args = build_parser().parse_args(coordinator.removeprefix(env).split())
    assert args.command == "worker" and args.all
    worker = next(ln for ln in lines if ln.startswith("rq worker"))
    words = worker.replace('"$REDIS_URL"', "redis://h:6379/0").split()
    parent = click.Context(rq_main, info_name="rq")
    command = rq_main.get_command(parent, words[1])
    assert command is not None
    params = command.make_context(words[1], words[2:], parent=parent).params
    assert params["queues"] == ("loops-agents",)
    assert issubclass(import_attribute(params["worker_class"]), BaseWorker)
