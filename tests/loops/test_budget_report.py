"""`loops budget`'s domain side: reading a person's raise and the scope it names
(`loops.budget_config`), and the spend per scope beside its limits
(`loops.budget_report`), on the spend ledger over fakeredis and Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import events as ev
from bus import RedisBus
from bus.spend import SpendLedger
from loops.budget_config import Limits, ProjectBudget, raise_scope, read_raises
from loops.budget_report import spend_report
from loops.harness import ProjectConfig
from loops.project import Project


def test_a_raise_is_read_whole_or_refused() -> None:
    assert read_raises(["+5usd", "+100k", "tokens"]) == [
        (ev.BudgetMetric.USD, 5),
        (ev.BudgetMetric.TOKENS, 100_000),
    ]
    for words in (["+5", "euros"], ["5usd"], ["+5usd", "+5", "euros"]):
        with pytest.raises(ev.ConfigError, match=r"as a raise: write e\.g\. \+5usd"):
            read_raises(words)


def test_a_raise_names_one_scope() -> None:
    assert raise_scope("loop-api", project=False, day=False) == (
        ev.BudgetLevel.LOOP,
        "loop:loop-api",
    )
    assert raise_scope("loop-api/API-2", project=False, day=False) == (
        ev.BudgetLevel.TASK,
        "task:loop-api/API-2",
    )
    assert raise_scope("+5usd", project=True, day=False) == (ev.BudgetLevel.PROJECT, "project")
    assert raise_scope(None, project=False, day=True) == (ev.BudgetLevel.DAY, "day")
    with pytest.raises(ev.ConfigError, match="not both"):
        raise_scope("loop-api", project=True, day=False)
    with pytest.raises(ev.ConfigError, match="name the LOOP to raise"):
        raise_scope("+5usd", project=False, day=False)


def test_the_limit_shown_is_the_files_plus_the_raises(bus: RedisBus, tmp_path: Path) -> None:
    ledger = SpendLedger(bus.client, bus.prefix)
    ledger.raise_limit("project", "usd", 2.5)
    budget = ProjectBudget(project=Limits(usd=10, tokens=1000))
    project = Project(root=tmp_path, loops=(), config=ProjectConfig(budget=budget))
    now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    rows = {row.scope: row for row in spend_report(ledger, project, ["loop-api"], now)}
    assert list(rows) == ["project", "day", "loop:loop-api"]
    assert rows["project"].limit == {"usd": 12.5, "tokens": 1000}
    assert rows["project"].line() == (
        "project: 0 calls, 0 tokens of 1000 tokens, $0.00 of $12.50, 0m (raised by $2.50)"
    )
    assert rows["loop:loop-api"].limit == {} and rows["day"].raised == {}
    alone = spend_report(ledger, None, [], now)  # no files: the spend alone
    assert [row.limit for row in alone] == [{}, {}]
