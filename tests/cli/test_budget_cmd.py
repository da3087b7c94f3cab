"""`loops budget` from a terminal, as a real subprocess against the real Redis: a raise
goes into the spend ledger and out as `budget.raised`; bad input is one line, exit 1."""

from __future__ import annotations

import json

import events as ev
from bus.spend import SpendLedger
from tests.cli.conftest import System
from tests.cli.sample import heartbeat


def test_a_raise_is_recorded_and_announced(system: System) -> None:
    system.bus.publish(heartbeat("loop-api"))
    done = system.loops("budget", "loop-api", "+5usd", "+100k", "tokens", check=True)
    assert "raised the loop budget loop:loop-api by $5.00" in done.stdout
    system.loops("budget", "loop-api/API-2", "+3calls", check=True)
    system.loops("budget", "--project", "+30m", check=True)
    ledger = SpendLedger(system.bus.client, system.prefix)
    assert ledger.raises("loop:loop-api") == {"usd": 5, "tokens": 100_000}
    assert ledger.raises("task:loop-api/API-2") == {"calls": 3}
    assert ledger.raises("project") == {"wall_s": 1800}
    raised = [e for _, e in system.bus.replay(types=["budget.raised"])]
    assert [(e.level, e.loop, e.task_id) for e in raised] == [  # type: ignore[attr-defined]
        (ev.BudgetLevel.LOOP, "loop-api", None),
        (ev.BudgetLevel.LOOP, "loop-api", None),
        (ev.BudgetLevel.TASK, "loop-api", "API-2"),
        (ev.BudgetLevel.PROJECT, None, None),
    ]
    shown = json.loads(system.loops("budget", "--json", check=True).stdout)
    rows = {r["scope"]: r for r in shown["scopes"]}
    assert rows["loop:loop-api"]["raised"] == {"usd": 5, "tokens": 100_000}


def test_bad_input_is_one_line_and_raises_nothing(system: System) -> None:
    system.bus.publish(heartbeat("loop-api"))
    for args in (("loop-api", "+5 euros"), ("loop-api", "5usd"), ("nope", "+5usd"), ("+5usd",)):
        proc = system.loops("budget", *args)
        assert proc.returncode == 1, (args, proc.stdout)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        if args[0] == "nope":
            assert proc.stderr.strip() == (
                "loops: no loop 'nope' on this system (loops: loop-api); nothing raised"
            )
    assert not list(system.bus.replay(types=["budget.raised"]))
