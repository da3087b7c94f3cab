"""`loops budget` (what was spent, and a person's raise) and `loops plan DIR` (what
`loops up` would run and may spend, before anything runs).

    loops budget                          spend and raises of the project and every loop
    loops budget LOOP +5usd               raise LOOP's budget by $5 (and resume it)
    loops budget LOOP/TASK +3calls        raise one task's budget
    loops budget --project +100k tokens   raise the project's budget (--day: the day's)

A raise is written to the spend ledger on the bus (durable) and announced with a
`budget.raised` event; the loops it held check their budgets again at once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from bus.spend import SpendLedger
from cli.context import known_loops, load_checked, open_bus, project_dir, require_loop
from events import BudgetLevel, BudgetRaised, LoopsError, Role, Source, utcnow
from loops.budget_config import raise_scope, read_raises
from loops.budget_plan import lines, plan, show
from loops.budget_report import spend_report
from loops.project import Project

EXIT_OK = 0


def run(args: argparse.Namespace) -> int:
    if args.command == "plan":
        return print_plan(args)
    words = list(args.amount)
    if args.loop and args.loop.startswith("+"):  # `loops budget --project +5usd`
        words.insert(0, args.loop)
    with open_bus(args) as bus:
        ledger = SpendLedger(bus.client, bus.prefix)
        if not words:
            return _show(args, ledger, sorted(known_loops(bus)))
        raises = read_raises(words)
        level, name = raise_scope(args.loop, project=args.project, day=args.day)
        loop, _, task = (args.loop or "").partition("/")
        of_loop = level in (BudgetLevel.TASK, BudgetLevel.LOOP)
        if of_loop:
            require_loop(bus, loop, "raised")
        for metric, amount in raises:
            total = ledger.raise_limit(name, metric.value, amount)
            bus.publish(
                BudgetRaised(
                    source=Source(role=Role.OPERATOR),
                    loop=loop if of_loop else None,
                    task_id=task if level is BudgetLevel.TASK else None,
                    level=level,
                    scope=name,
                    metric=metric,
                    amount=amount,
                )
            )
            print(
                f"raised the {level.value} budget {name} by {show(amount, metric.value)} "
                f"(raised by {show(total, metric.value)} in all); held loops check again now"
            )
    return EXIT_OK


def print_plan(args: argparse.Namespace) -> int:
    """`loops plan DIR` and `loops up --dry-run`."""
    project = load_checked(project_dir(args.dir))
    p = plan(
        project,
        agent=getattr(args, "agent", None),
        max_usd=getattr(args, "max_cost", None),
        max_tokens=getattr(args, "max_tokens", None),
    )
    if getattr(args, "json", False):
        print(json.dumps(p.as_dict(), indent=2))
    else:
        print("\n".join(lines(p)))
        print("Dry run: nothing started.")
    return EXIT_OK


def _show(args: argparse.Namespace, ledger: SpendLedger, loops: list[str]) -> int:
    try:  # the limits, as far as the files in --dir can be read (else the spend alone)
        project: Project | None = load_checked(project_dir(getattr(args, "project_dir", None)))
    except LoopsError:
        project = None
    rows = spend_report(ledger, project, loops, utcnow())
    if args.json:
        scopes = [asdict(row) for row in rows]
        print(json.dumps({"scopes": scopes, "open_calls": len(ledger.open_calls())}, indent=2))
        return EXIT_OK
    for row in rows:
        print(row.line())
    print("Raise a budget with `loops budget LOOP +5usd` (LOOP/TASK for a task; --project, --day).")
    return EXIT_OK
