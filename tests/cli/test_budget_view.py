"""What the operator sees of budgets: `loops status` and the dashboard's loop card (one
read model) show a budget near or at its limit until a person raises it."""

from __future__ import annotations

import events as ev
from cli.fmt import render
from events.view import SystemView

W = ev.Source(role=ev.Role.WORKER, instance="w")
FIELDS = {"scope": "loop:loop-api", "metric": ev.BudgetMetric.USD, "loop": "loop-api"}


def test_a_warning_then_a_hold_then_a_raise() -> None:
    warned = ev.BudgetWarned(
        source=W, level=ev.BudgetLevel.LOOP, spent=4.1, limit=5, threshold=0.8, **FIELDS
    )
    view = SystemView.from_events([warned])
    assert view.loops["loop-api"].budget == "loop budget warning: $4.10 of $5.00"
    assert "BUDGET loop-api: loop budget warning: $4.10 of $5.00" in render(view)
    spent = ev.BudgetExhausted(source=W, level=ev.BudgetLevel.LOOP, spent=5.2, limit=5, **FIELDS)
    view = SystemView.from_events([warned, spent])
    assert view.loops["loop-api"].budget == "loop budget spent, paused: $5.20 of $5.00"
    raised = ev.BudgetRaised(source=W, level=ev.BudgetLevel.LOOP, amount=5, **FIELDS)
    view = SystemView.from_events([warned, spent, raised])
    assert view.loops["loop-api"].budget is None
    assert "BUDGET" not in render(view)
