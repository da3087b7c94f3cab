"""What was spent against the budgets (`loops budget`): per scope (the project, the
rolling day, each loop), the spend ledger's figures beside the limit the next call is
checked against (the project's files' limit plus a person's raises) and the raises."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bus.spend import DAY, METRICS, PROJECT, SpendLedger, loop_scope
from events import BudgetMetric
from loops.budget_config import Limits, effective
from loops.budget_plan import show
from loops.project import Project

__all__ = ["ScopeSpend", "configured_limits", "spend_report"]


@dataclass(frozen=True)
class ScopeSpend:
    """One scope's spend (metric -> figure), limit and raises."""

    scope: str
    spent: dict[str, float]
    limit: dict[str, float]
    raised: dict[str, float]

    def line(self) -> str:
        """`loop:api: $4.10 of $5.00, 1200 tokens, ... (raised by $1.00)`."""
        figures = ", ".join(
            show(v, m) + (f" of {show(self.limit[m], m)}" if m in self.limit else "")
            for m, v in self.spent.items()
        )
        extra = ", ".join(show(v, m) for m, v in self.raised.items())
        return f"{self.scope}: {figures}" + (f" (raised by {extra})" if extra else "")


def configured_limits(project: Project | None) -> dict[str, dict[str, float]]:
    """The limits the project's files set, per scope (`project`, `day`, `loop:NAME`);
    none without the files (the spend is shown alone)."""
    if project is None:
        return {}

    def of(limits: Limits | None) -> dict[str, float]:
        if limits is None:
            return {}
        return {m.value: v for m in BudgetMetric if (v := limits.get(m)) is not None}

    base = effective(project.config.budget)
    out = {PROJECT: of(base.project), DAY: of(base.day)}
    for lp in project.loops:
        out[loop_scope(lp.name)] = of(effective(project.config.budget, lp.config.budget).loop)
    return out


def spend_report(
    ledger: SpendLedger, project: Project | None, loops: Iterable[str], now: datetime
) -> list[ScopeSpend]:
    """The project's, the day's and each of `loops`' spend, as of `now`."""
    configured = configured_limits(project)
    rows = []
    for scope in [PROJECT, DAY, *(loop_scope(lp) for lp in loops)]:
        spend = ledger.spent(scope, now)
        raised = ledger.raises(scope)
        limit = {m: v + raised.get(m, 0.0) for m, v in configured.get(scope, {}).items()}
        rows.append(ScopeSpend(scope, {m: spend.get(m) for m in METRICS}, limit, raised))
    return rows
