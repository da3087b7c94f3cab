"""Budget settings (issue 14): `budget` in a loop's config.json and in project.json,
how a loop's effective budget is put together, and how a person writes a raise
(`+5usd`). Enforcement is `loops/budget.py`."""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field

from bus.spend import DAY, PROJECT, loop_scope, task_scope
from events import BudgetLevel, BudgetMetric, ConfigError

DEFAULT_WARN_AT = 0.8


class Limits(BaseModel):
    """One level's budget: any subset of the four (a missing one is unlimited)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd: float | None = Field(default=None, gt=0, description="dollars (the agents' cost_usd)")
    tokens: int | None = Field(
        default=None, ge=1, description="tokens: input + output + cache reads and writes"
    )
    calls: int | None = Field(
        default=None, ge=1, description="agent calls (each counted when it starts)"
    )
    wall_s: float | None = Field(
        default=None, gt=0, description="seconds of agent wall time (a running call counts)"
    )

    def get(self, metric: BudgetMetric) -> float | None:
        value = getattr(self, metric.value)
        return None if value is None else float(value)

    def merged(self, other: Limits | None) -> Limits:
        """These limits, with `other`'s where this one has none."""
        if other is None:
            return self
        return Limits.model_validate(
            {m.value: _first(self.get(m), other.get(m), m) for m in BudgetMetric}
        )


def _first(a: float | None, b: float | None, metric: BudgetMetric) -> float | int | None:
    value = a if a is not None else b
    if value is not None and metric in (BudgetMetric.CALLS, BudgetMetric.TOKENS):
        return int(value)
    return value


class LoopBudget(BaseModel):
    """`budget` in a loop's config.json: this loop's task and loop budgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Limits | None = Field(default=None, description="what one task may spend, all attempts")
    loop: Limits | None = Field(default=None, description="what the whole loop may spend")
    warn_at: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="the fraction of a limit that warns (default 0.8; project.json's if set)",
    )
    hard_ceiling: bool | None = Field(
        default=None,
        description="kill a running call when its wall time would pass a limit (default: a "
        "call that started finishes)",
    )


class ProjectBudget(LoopBudget):
    """`budget` in project.json: the project's and the day's budgets, and every loop's defaults.

    A loop's own `task` and `loop` limits override these defaults metric by metric."""

    project: Limits | None = Field(default=None, description="what the whole project may spend")
    day: Limits | None = Field(
        default=None, description="what the project may spend in any 24 hours (hour buckets)"
    )


def effective(
    project: ProjectBudget | None,
    loop: LoopBudget | None = None,
    *,
    max_usd: float | None = None,
    max_tokens: int | None = None,
    flags_level: BudgetLevel = BudgetLevel.LOOP,
) -> ProjectBudget:
    """The budget one loop works under: its own config over the project's defaults,
    and the `--max-cost` / `--max-tokens` flags over both at `flags_level`."""
    project = project or ProjectBudget()
    loop = loop or LoopBudget()
    data: dict[str, object] = {
        "task": _merge(loop.task, project.task),
        "loop": _merge(loop.loop, project.loop),
        "project": project.project,
        "day": project.day,
        "warn_at": loop.warn_at if loop.warn_at is not None else project.warn_at,
        "hard_ceiling": (
            loop.hard_ceiling if loop.hard_ceiling is not None else project.hard_ceiling
        ),
    }
    if max_usd is not None or max_tokens is not None:
        key = flags_level.value
        flags = Limits(usd=max_usd, tokens=max_tokens)
        current = data[key]
        data[key] = flags.merged(current if isinstance(current, Limits) else None)
    return ProjectBudget.model_validate(data)


def _merge(own: Limits | None, default: Limits | None) -> Limits | None:
    if own is None:
        return default
    return own.merged(default)


# -- reading a raise ------------------------------------------------------------------

_RAISE = re.compile(
    r"\+\s*(?:\$\s*(?P<dollars>\d+(?:\.\d+)?)|(?P<n>\d+(?:\.\d+)?)\s*(?P<k>k)?\s*"
    r"(?P<unit>usd|dollars?|\$|tokens?|calls?|hours?|h|minutes?|min|m|seconds?|sec|s)\b)",
    re.IGNORECASE,
)
_UNITS: dict[str, tuple[BudgetMetric, float]] = {
    "usd": (BudgetMetric.USD, 1),
    "dollar": (BudgetMetric.USD, 1),
    "dollars": (BudgetMetric.USD, 1),
    "$": (BudgetMetric.USD, 1),
    "token": (BudgetMetric.TOKENS, 1),
    "tokens": (BudgetMetric.TOKENS, 1),
    "call": (BudgetMetric.CALLS, 1),
    "calls": (BudgetMetric.CALLS, 1),
    "h": (BudgetMetric.WALL_S, 3600),
    "hour": (BudgetMetric.WALL_S, 3600),
    "hours": (BudgetMetric.WALL_S, 3600),
    "m": (BudgetMetric.WALL_S, 60),
    "min": (BudgetMetric.WALL_S, 60),
    "minute": (BudgetMetric.WALL_S, 60),
    "minutes": (BudgetMetric.WALL_S, 60),
    "s": (BudgetMetric.WALL_S, 1),
    "sec": (BudgetMetric.WALL_S, 1),
    "second": (BudgetMetric.WALL_S, 1),
    "seconds": (BudgetMetric.WALL_S, 1),
}
EXAMPLE_RAISE = {
    BudgetMetric.USD: "+5usd",
    BudgetMetric.TOKENS: "+100000tokens",
    BudgetMetric.CALLS: "+10calls",
    BudgetMetric.WALL_S: "+30m",
}
RAISE_HELP = "+5usd, +$5, +100000tokens, +100k tokens, +3calls, +30m, +2h or +600s"


def parse_raises(text: str) -> list[tuple[BudgetMetric, float]]:
    """Every raise written in `text` (`+5usd`, `+100k tokens`, `+3calls`, `+30m`...)."""
    found: list[tuple[BudgetMetric, float]] = []
    for m in _RAISE.finditer(text):
        if m.group("dollars"):
            found.append((BudgetMetric.USD, float(m.group("dollars"))))
            continue
        metric, scale = _UNITS[m.group("unit").lower()]
        amount = float(m.group("n")) * scale * (1000 if m.group("k") else 1)
        if amount > 0 and math.isfinite(amount):
            found.append((metric, amount))
    return found


def read_raises(words: list[str]) -> list[tuple[BudgetMetric, float]]:
    """The raises a person typed (`+5usd +100k tokens`), every `+` one of them; else
    `ConfigError` with the way to write one."""
    raises = parse_raises(" ".join(words))
    if not raises or len(raises) != sum(w.count("+") for w in words):
        raise ConfigError(f"cannot read {' '.join(words)!r} as a raise: write e.g. {RAISE_HELP}")
    return raises


def raise_scope(target: str | None, *, project: bool, day: bool) -> tuple[BudgetLevel, str]:
    """The level and scope a raise names: `LOOP`, `LOOP/TASK`, or the project's (or the
    day's) budget; else `ConfigError` saying what to name."""
    if project or day:
        if target and not target.startswith("+"):
            raise ConfigError("name a LOOP or --project/--day, not both")
        return (BudgetLevel.PROJECT, PROJECT) if project else (BudgetLevel.DAY, DAY)
    if not target or target.startswith("+"):
        raise ConfigError(
            "name the LOOP to raise (or --project / --day), e.g. `loops budget LOOP +5usd`"
        )
    loop, _, task = target.partition("/")
    if task:
        return BudgetLevel.TASK, task_scope(loop, task)
    return BudgetLevel.LOOP, loop_scope(loop)
