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
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rest is imported when the command runs: `loops --help` stays quick
    from bus.spend import SpendLedger
    from events import BudgetLevel

EXIT_OK, EXIT_FAIL = 0, 1
RAISE_EXAMPLES = "+5usd, +$5, +100000tokens, +100k tokens, +3calls, +30m, +2h or +600s"


def add_flags(p: argparse.ArgumentParser, what: str, *, dry_run: bool = False) -> None:
    """`--max-cost` and `--max-tokens` (and `--dry-run` for `loops up`)."""
    p.add_argument(
        "--max-cost",
        type=_positive(float),
        metavar="USD",
        default=None,
        help=f"stop starting agent calls once {what} has spent this many dollars",
    )
    p.add_argument(
        "--max-tokens",
        type=_positive(int),
        metavar="N",
        default=None,
        help=f"stop starting agent calls once {what} has used this many tokens",
    )
    if dry_run:
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print the tasks that would run, in order, with the budget each may use, "
            "and the worst case per loop and for the project; start nothing",
        )


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
        return value

    return parse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `loops budget` and `loops plan`."""
    from cli.main import _add_redis, _command

    p = _command(sub, "budget", "budget", help="what was spent against the budgets; raise a budget")
    _add_redis(p)
    p.add_argument(
        "loop", metavar="LOOP[/TASK]", nargs="?", default=None, help="the loop (or one task)"
    )
    p.add_argument("amount", metavar="+AMOUNT", nargs="*", help=f"a raise, e.g. {RAISE_EXAMPLES}")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--project", action="store_true", help="raise the project's budget")
    level.add_argument("--day", action="store_true", help="raise the project's daily budget")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(
        sub,
        "plan",
        "budget:print_plan",
        help="what `loops up` would run and may spend; starts nothing",
    )
    p.add_argument("dir", nargs="?", default=None, help="project directory (default: .)")
    p.add_argument("--agent", metavar="A", default=None, help="as `loops up --agent`")
    add_flags(p, "the project")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.command == "plan":
        return print_plan(args)
    return _budget(args)


def print_plan(args: argparse.Namespace) -> int:
    """`loops plan DIR` and `loops up --dry-run`."""
    from cli.context import load_checked, project_dir
    from loops.budget_plan import lines, plan

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


def _scope(args: argparse.Namespace) -> tuple[BudgetLevel, str] | str:
    """The scope a raise names, or why it names none (one line)."""
    from bus.spend import DAY, PROJECT, loop_scope, task_scope
    from events import BudgetLevel

    if args.project or args.day:
        if args.loop and not args.loop.startswith("+"):
            return "name a LOOP or --project/--day, not both"
        return (BudgetLevel.PROJECT, PROJECT) if args.project else (BudgetLevel.DAY, DAY)
    if not args.loop or args.loop.startswith("+"):
        return "name the LOOP to raise (or --project / --day), e.g. `loops budget LOOP +5usd`"
    loop, _, task = args.loop.partition("/")
    if task:
        return BudgetLevel.TASK, task_scope(loop, task)
    return BudgetLevel.LOOP, loop_scope(loop)


def _budget(args: argparse.Namespace) -> int:
    from bus.spend import SpendLedger
    from cli.context import known_loops, open_bus
    from events import BudgetLevel, BudgetRaised, Role, Source
    from events.view import clean
    from loops.budget_config import RAISE_HELP, parse_raises
    from loops.budget_plan import show

    words = list(args.amount)
    if args.loop and args.loop.startswith("+"):  # `loops budget --project +5usd`
        words.insert(0, args.loop)
    with open_bus(args) as bus:
        ledger = SpendLedger(bus.client, bus.prefix)
        if not words:
            return _show(args, ledger, sorted(known_loops(bus)))
        raises = parse_raises(" ".join(words))
        if not raises or len(raises) != sum(w.count("+") for w in words):
            print(
                f"loops: cannot read {' '.join(words)!r} as a raise: write e.g. {RAISE_HELP}",
                file=sys.stderr,
            )
            return EXIT_FAIL
        scope = _scope(args)
        if isinstance(scope, str):
            print(f"loops: {scope}", file=sys.stderr)
            return EXIT_FAIL
        level, name = scope
        loop, _, task = (args.loop or "").partition("/")
        loops = known_loops(bus)
        if level in (BudgetLevel.TASK, BudgetLevel.LOOP) and loop not in loops:
            known = ", ".join(sorted(loops)) or "none yet"
            print(
                f"loops: no loop {clean(loop, 60)!r} on this system (loops: {known}); "
                "nothing raised",
                file=sys.stderr,
            )
            return EXIT_FAIL
        for metric, amount in raises:
            total = ledger.raise_limit(name, metric.value, amount)
            bus.publish(
                BudgetRaised(
                    source=Source(role=Role.OPERATOR),
                    loop=loop if level in (BudgetLevel.TASK, BudgetLevel.LOOP) else None,
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


def _configured(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The limits the project's files set, per scope (`project`, `day`, `loop:NAME`), as
    far as they can be read from --dir (else none: the spend is shown alone)."""
    from cli.context import load_checked, project_dir
    from events import BudgetMetric, LoopsError
    from loops.budget_config import Limits, effective

    try:
        project = load_checked(project_dir(getattr(args, "project_dir", None)))
    except LoopsError:
        return {}

    def of(limits: Limits | None) -> dict[str, float]:
        if limits is None:
            return {}
        return {m.value: v for m in BudgetMetric if (v := limits.get(m)) is not None}

    base = effective(project.config.budget)
    out = {"project": of(base.project), "day": of(base.day)}
    for lp in project.loops:
        out[f"loop:{lp.name}"] = of(effective(project.config.budget, lp.config.budget).loop)
    return out


def _show(args: argparse.Namespace, ledger: SpendLedger, loops: list[str]) -> int:
    from bus.spend import DAY, METRICS, PROJECT, loop_scope
    from events import utcnow
    from loops.budget_plan import show

    now = utcnow()
    configured = _configured(args)
    rows: list[tuple[str, dict[str, float], dict[str, float], dict[str, float]]] = []
    for scope in [PROJECT, DAY, *(loop_scope(lp) for lp in loops)]:
        spend = ledger.spent(scope, now)
        raised = ledger.raises(scope)
        # What the next call is checked against: the files' limit plus the raises.
        limit = {m: v + raised.get(m, 0.0) for m, v in configured.get(scope, {}).items()}
        rows.append((scope, {m: spend.get(m) for m in METRICS}, limit, raised))
    if args.json:
        data = [
            {"scope": scope, "spent": spent, "limit": limit, "raised": raised}
            for scope, spent, limit, raised in rows
        ]
        print(json.dumps({"scopes": data, "open_calls": len(ledger.open_calls())}, indent=2))
        return EXIT_OK
    for scope, spent, limit, raised in rows:
        figures = ", ".join(
            show(v, m) + (f" of {show(limit[m], m)}" if m in limit else "")
            for m, v in spent.items()
        )
        extra = ", ".join(show(v, m) for m, v in raised.items())
        print(f"{scope}: {figures}" + (f" (raised by {extra})" if extra else ""))
    print("Raise a budget with `loops budget LOOP +5usd` (LOOP/TASK for a task; --project, --day).")
    return EXIT_OK
