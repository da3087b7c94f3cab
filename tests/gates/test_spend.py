"""Verification runs and judge calls count against the project's (and the day's)
budget, each on its own line of the spend ledger (issue 14)."""

from __future__ import annotations

from datetime import timedelta

from bus.spend import DAY, PROJECT, SpendLedger
from events import utcnow
from gates.judge import AnthropicJudge
from tests.gates.conftest import Project
from tests.gates.test_flow import MUL
from tests.gates.test_judge import FakeModelAPI, judge, model_api  # noqa: F401 - fixtures


def ledger(project: Project) -> SpendLedger:
    return SpendLedger(project.bus.client, project.bus.prefix)


def test_verification_runs_and_judge_calls_count_on_their_own_lines(
    project: Project,
    judge: AnthropicJudge,  # noqa: F811
    model_api: FakeModelAPI,  # noqa: F811
) -> None:
    project.judge = judge
    project.start()
    project.gate.spend = ledger(project)
    a = project.loop("a")
    a.claim("mul", a.write({"app.py": MUL}, "mul"))
    project.pump()
    project.pump()  # a redelivery counts nothing twice
    lines = ledger(project).lines(PROJECT)
    assert lines["verify.calls"] == 1 and lines["verify.wall_s"] > 0
    assert "agent.calls" not in lines and "judge.calls" not in lines
    later = utcnow() + timedelta(minutes=1)
    assert ledger(project).spent(DAY, later).calls == 1
    # A natural criterion: one judge call, on its own line (no script check to run).
    model_api.replies = [(200, "PASS\nDocumented.")]
    a.claim("doc", a.write({"README.md": "# tiny\n\nmul(a, b) multiplies.\n"}, "docs"))
    project.pump()
    lines = ledger(project).lines(PROJECT)
    assert lines["judge.calls"] == 1 and lines["verify.calls"] == 1
    assert ledger(project).spent(PROJECT, later).calls == 2
