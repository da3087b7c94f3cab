"""Estimates before spending (issue 14, item 5): what `loops plan DIR` and
`loops up --dry-run` print. The tasks that would run, in the order a worker takes
them, the budget each may use, and the worst case per loop and for the project.
Reads the project's files only; starts nothing and writes nothing.

A worst case is the smallest of what bounds it: calls by the task's `calls` budget
or, without one, by `max_attempts` x the iterations of an attempt; wall time by the
`wall_s` budget or calls x the agent timeout; dollars and tokens only by budgets
(None: unbounded). A loop's worst case is the sum of its tasks' capped by its `loop`
budget; the project's is the sum of its loops' capped by its `project` budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from events import BudgetLevel, BudgetMetric
from loops.books import DEFAULT_ATTEMPT_ITERATIONS
from loops.budget_config import Limits, ProjectBudget, effective
from loops.harness import FileStatus
from loops.project import Loop, Project

METRICS = tuple(m.value for m in BudgetMetric)
SHOWN = ("usd", "tokens", "calls", "wall_s")  # the order a person reads them in
Worst = dict[str, float | None]  # metric -> worst case (None: unbounded)
_PROJ = BudgetLevel.PROJECT  # `loops up --max-cost/--max-tokens` cap the whole project


@dataclass(frozen=True)
class PlannedTask:
    id: str
    title: str
    budget: dict[str, float | None]  # the task's own limits (None: none)
    worst: Worst


@dataclass(frozen=True)
class PlannedLoop:
    name: str
    agent: str
    tasks: list[PlannedTask]
    budget: dict[str, float | None]
    worst: Worst


@dataclass(frozen=True)
class Plan:
    loops: list[PlannedLoop]
    budget: dict[str, float | None]  # the project's limits
    day: dict[str, float | None]
    worst: Worst
    skipped: list[str] = field(default_factory=list)  # loop/task already passed or blocked

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _limits(limits: Limits | None) -> dict[str, float | None]:
    return {m.value: (limits.get(m) if limits else None) for m in BudgetMetric}


def _cap(worst: Worst, limits: Limits | None) -> Worst:
    out: Worst = {}
    for metric in BudgetMetric:
        value, cap = worst[metric.value], limits.get(metric) if limits else None
        out[metric.value] = cap if value is None else value if cap is None else min(value, cap)
    return out


def _sum(parts: list[Worst]) -> Worst:
    out: Worst = dict.fromkeys(METRICS, 0.0)
    for part in parts:
        for metric in METRICS:
            a, b = out[metric], part[metric]
            out[metric] = None if a is None or b is None else a + b
    return out


def _order(loop: Loop) -> list[tuple[str, str]]:
    """(id, title) of the tasks the loop would run, in its worker's order: priority,
    then file order (dependencies wait, but every open task runs at some point)."""
    entries = [
        (i, e)
        for i, e in enumerate(loop.state.tests)
        if e.automatable and e.status in (FileStatus.PENDING, FileStatus.FAILED)
    ]
    entries.sort(key=lambda it: (it[1].priority if it[1].priority is not None else 0, it[0]))
    return [(e.id, e.title or e.notes or e.id) for _, e in entries]


def plan(
    project: Project,
    *,
    agent: str | None = None,
    max_usd: float | None = None,
    max_tokens: int | None = None,
    attempt_iterations: int = DEFAULT_ATTEMPT_ITERATIONS,
) -> Plan:
    """The plan of `loops up` on `project` (the flags as `loops up` takes them)."""
    base: ProjectBudget | None = project.config.budget
    loops: list[PlannedLoop] = []
    skipped: list[str] = []
    project_budget = effective(base, max_usd=max_usd, max_tokens=max_tokens, flags_level=_PROJ)
    for loop in project.loops:
        budget = effective(
            base, loop.config.budget, max_usd=max_usd, max_tokens=max_tokens, flags_level=_PROJ
        )
        runs = float(loop.config.max_attempts * attempt_iterations)
        natural: Worst = {"calls": runs, "tokens": None, "usd": None, "wall_s": None}
        calls = _cap(natural, budget.task)["calls"] or runs
        # Each call runs at most the agent timeout; a `wall_s` budget may cap it sooner.
        natural["wall_s"] = calls * loop.config.agent_timeout_s
        tasks = [
            PlannedTask(task_id, title, _limits(budget.task), _cap(natural, budget.task))
            for task_id, title in _order(loop)
        ]
        skipped += [
            f"{loop.name}/{e.id}"
            for e in loop.state.tests
            if e.automatable and e.status not in (FileStatus.PENDING, FileStatus.FAILED)
        ]
        worst = _cap(_sum([t.worst for t in tasks]), budget.loop)
        loops.append(
            PlannedLoop(
                loop.name,
                agent or loop.config.agent or "claude",
                tasks,
                _limits(budget.loop),
                worst,
            )
        )
    total = _cap(_sum([lp.worst for lp in loops]), project_budget.project)
    return Plan(loops, _limits(project_budget.project), _limits(project_budget.day), total, skipped)


def show(value: float | None, metric: str) -> str:
    """One figure for a person: `tokens unbounded`, `$1.50`, `12 calls`, `1h30m`."""
    if value is None:
        return f"{'dollars' if metric == 'usd' else 'time' if metric == 'wall_s' else metric} unbounded"
    if metric == "usd":
        return f"${value:.2f}"
    if metric == "wall_s":
        minutes = round(value / 60)
        return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{value / 60:.0f}m"
    return f"{value:g} {metric}"


def lines(p: Plan) -> list[str]:
    """The plan as a person reads it."""
    out: list[str] = []

    def figures(w: Worst) -> str:
        return ", ".join(show(w[m], m) for m in SHOWN)

    for lp in p.loops:
        out.append(f"loop {lp.name} ({lp.agent}): worst case {figures(lp.worst)}")
        for n, t in enumerate(lp.tasks, 1):
            out.append(f"  {n}. {t.id} {t.title[:60]!r}: may use {figures(t.worst)}")
        if not lp.tasks:
            out.append("  (no open task)")
    if p.skipped:
        out.append(f"not run (passed or blocked): {', '.join(p.skipped)}")
    out.append(f"project: worst case {figures(p.worst)}")
    if any(v is not None for v in p.day.values()):
        day = ", ".join(show(v, m) for m, v in p.day.items() if v is not None)
        out.append(f"rolling day: at most {day} in any 24 hours")
    unbounded = [
        label for m, label in (("usd", "dollars"), ("tokens", "tokens")) if p.worst[m] is None
    ]
    if unbounded:
        out.append(
            f"no limit on {' or '.join(unbounded)}: set `budget` in project.json or a loop's "
            "config.json, or pass --max-cost / --max-tokens"
        )
    return out
