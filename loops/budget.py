"""Budgets and their enforcement (issue 14): deterministic harness code, never a model.

Four levels, each with any subset of agent calls, tokens, dollars and wall time:
a task, a loop, the project, and the project's rolling day. They come from config.json
(`budget.task`, `budget.loop`), project.json (all four; a loop's own override the
project's task and loop defaults) and the `--max-cost` / `--max-tokens` flags.

Before each agent call the worker asks `before_call`: every level is compared with
what the spend ledger (`bus.spend.SpendLedger`, durable on the bus) holds. Past the
warning threshold: `budget.warned`, once per scope, metric and limit, and a terminal
line. At the limit: no call. A task's budget holds that task (other tasks go on); a
loop's holds the loop; the project's or the day's holds every loop. Each hold is a
`budget.exhausted` event and a question to a person (one for the whole project), who
answers `+5usd` (or `+100000tokens`, `+3calls`, `+30m`), `skip` (give up the task) or
`stop` (stop the loop); `loops budget LOOP +5usd` does the same from a terminal.

The call is counted when it starts (`begin`) and its figures added when it ends, so
a kill -9 mid-call forgets nothing. A running call finishes, unless `hard_ceiling` is
on: then its timeout is cut to the wall time left at its tightest level, and the
timeout path kills its process group.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from bus import CONNECTION_ERRORS
from bus.spend import DAY, PROJECT, SpendLedger, clean, loop_scope, task_scope
from events import (
    BudgetExhausted,
    BudgetLevel,
    BudgetMetric,
    BudgetRaised,
    BudgetWarned,
    Decision,
    EscalationAnswered,
    EscalationExpired,
    EscalationKind,
    LoopStatus,
    Severity,
    TaskBlocked,
    new_id,
    short_id,
)
from loops.book import FileStatus, TaskDef
from loops.budget_config import (
    DEFAULT_WARN_AT,
    EXAMPLE_RAISE,
    RAISE_HELP,
    Limits,
    ProjectBudget,
    parse_raises,
)
from loops.runtime import Phase

if TYPE_CHECKING:
    from loops.runners import AgentResult
    from loops.worker import LoopWorker

log = logging.getLogger("loops.worker")

EPSILON = 1e-9  # sums of dollar figures in floating point: $0.1 x 8 is $0.8

# -- the guard ------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One level's state for one metric before a call."""

    level: BudgetLevel
    scope: str
    metric: BudgetMetric
    spent: float
    limit: float

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit - EPSILON

    def near(self, threshold: float) -> bool:
        """Past `threshold` (a fraction) of the limit, not yet at it."""
        return self.spent >= threshold * self.limit - EPSILON and not self.exhausted

    def line(self) -> str:
        name = self.scope.partition(":")[2]
        return f"{self.level.value} budget{f' of {name}' if name else ''}: {_fmt(self)}"


def _fmt(lv: Level) -> str:
    unit = {"usd": "$", "tokens": " tokens", "calls": " calls", "wall_s": "s"}[lv.metric.value]
    if lv.metric is BudgetMetric.USD:
        return f"{_usd(lv.spent)} of {_usd(lv.limit)}"
    return f"{lv.spent:g}{unit} of {lv.limit:g}{unit}"


def _usd(amount: float) -> str:
    """Cents, or the significant digits of an amount under a cent (a $0.0001 limit is
    not shown as $0.00)."""
    if amount == 0 or amount >= 0.01:
        return f"${amount:.2f}"
    return f"${amount:.6f}".rstrip("0").rstrip(".")


class BudgetGuard:
    """One loop's budgets against the shared spend ledger."""

    def __init__(
        self,
        ledger: SpendLedger,
        budget: ProjectBudget,
        loop: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        self.loop = loop
        self.clock = clock
        self.call: str | None = None  # the call in progress (its id in the ledger)
        # Ended calls whose figures a lost Redis kept back: (id, ended, tokens, usd, wall).
        self.unsent: list[tuple[str, datetime, float, float | None, float]] = []

    def scopes(self, task_id: str) -> list[tuple[BudgetLevel, str, Limits | None]]:
        b = self.budget
        return [
            (BudgetLevel.TASK, task_scope(self.loop, task_id), b.task),
            (BudgetLevel.LOOP, loop_scope(self.loop), b.loop),
            (BudgetLevel.PROJECT, PROJECT, b.project),
            (BudgetLevel.DAY, DAY, b.day),
        ]

    def levels(self, task_id: str) -> list[Level]:
        """Every limited metric at every level, with its spend and its raised limit."""
        now = self.clock()
        out: list[Level] = []
        for level, scope, limits in self.scopes(task_id):
            if limits is None:
                continue
            spent = self.ledger.spent(scope, now)
            raises = self.ledger.raises(scope)
            for metric in BudgetMetric:
                limit = limits.get(metric)
                if limit is not None:
                    limit += raises.get(metric.value, 0.0)
                    out.append(Level(level, scope, metric, spent.get(metric.value), limit))
        return out

    def begin(self, task_id: str) -> str:
        """Count a call on `task_id` at every level (the ledger keeps all four scopes,
        limited or not, for receipts and `loops budget`)."""
        call_id = f"{self.loop}:{new_id()}"
        self.ledger.begin(call_id, [s for _, s, _ in self.scopes(task_id)], self.clock())
        self.call = call_id
        return call_id

    def end(self, result: AgentResult, usd: float | None = None) -> None:
        """Add the call's figures (`usd`: its cost as priced, else the agent's report;
        invalid ones count as 0; the measured wall time wins over a smaller reported
        one). A lost Redis must not cost the iteration its work:
        the figures wait in memory and go in before the next call (`flush`)."""
        if self.call is None:
            return
        call_id, self.call = self.call, None
        tokens = result.tokens
        total = sum(
            clean(getattr(tokens, f))
            for f in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        cost = result.cost_usd if usd is None else usd
        self.unsent.append((call_id, self.clock(), total, cost, result.duration_s))
        try:
            self.flush()
        except CONNECTION_ERRORS as exc:
            log.warning("the spend of this call waits for Redis (%s)", exc)

    def flush(self) -> None:
        """Add the figures of ended calls that a lost Redis kept back (oldest first)."""
        while self.unsent:
            call_id, ended, tokens, usd, wall = self.unsent[0]
            self.ledger.end(call_id, ended, tokens=tokens, usd=usd, wall_s=wall)
            self.unsent.pop(0)

    def timeout_s(self, task_id: str, default: float) -> float:
        """The call's timeout: `default`, cut to the wall time left at the tightest level
        when `hard_ceiling` is on (at least 1s: the guard let the call start)."""
        if not self.budget.hard_ceiling:
            return default
        left = [
            lv.limit - lv.spent for lv in self.levels(task_id) if lv.metric is BudgetMetric.WALL_S
        ]
        return max(min([default, *left]), 1.0)


# -- the worker's hooks ---------------------------------------------------------------


def before_call(w: LoopWorker, task: TaskDef) -> bool:
    """Before an agent call on `task`: warn, hold, or count the call. False: no call
    (the task or the loop is held; a person raises the budget or stops the work)."""
    guard = w.budget
    if guard is None:
        return True
    guard.flush()
    levels = guard.levels(task.id)
    threshold = guard.budget.warn_at or DEFAULT_WARN_AT
    for lv in levels:
        if lv.near(threshold) and guard.ledger.mark_once(
            f"warn|{lv.scope}|{lv.metric.value}|{lv.limit:g}"
        ):
            log.warning("Budget warning: %s (%.0f%%)", lv.line(), 100 * lv.spent / lv.limit)
            _emit(w, BudgetWarned, task, lv, threshold=threshold)
    spent = next((lv for lv in levels if lv.exhausted), None)
    if spent is None:
        guard.begin(task.id)
        return True
    _hold(w, task, spent)
    return False


def after_call(w: LoopWorker, result: AgentResult) -> AgentResult:
    """After the call: the agent's usage report made sane (a cost that is not a finite,
    non-negative number is unknown; negative token counts are 0), then its figures added
    to the ledger, its cost as `loops.cost.Pricer` prices it (the agent's report, else
    its tokens at the model's price). Its call and wall time count whatever it says."""
    result = sane_usage(result)
    if w.budget is not None:
        # What the iteration's event records: the agent's report, else its tokens priced.
        w.budget.end(result, usd=w.pricer.cost(result, w.book.model).usd)
    return result


def sane_usage(result: AgentResult) -> AgentResult:
    """`result` with its cost and tokens as the harness trusts them (see `after_call`)."""
    cost = result.cost_usd
    bad_cost = cost is not None and not (isinstance(cost, int | float) and clean(cost) == cost)
    tokens = result.tokens
    counts = {
        f: getattr(tokens, f)
        for f in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    }
    bad_tokens = {f: v for f, v in counts.items() if int(clean(v)) != v}
    if not bad_cost and not bad_tokens:
        return result
    log.warning(
        "the agent reported invalid usage (cost %r, tokens %s): not trusted; its call and "
        "wall time still count",
        cost,
        bad_tokens or "ok",
    )
    fixed = tokens.model_copy(update={f: int(clean(v)) for f, v in bad_tokens.items()})
    return replace(result, cost_usd=None if bad_cost else cost, tokens=fixed)


def _emit(
    w: LoopWorker,
    cls: type[BudgetWarned] | type[BudgetExhausted],
    task: TaskDef,
    lv: Level,
    **extra: object,
) -> None:
    """`budget.warned` / `budget.exhausted` for `lv` (a task's carries its task id)."""
    w.emit(
        cls,
        task.id if lv.level is BudgetLevel.TASK else None,
        level=lv.level,
        scope=lv.scope,
        metric=lv.metric,
        spent=lv.spent,
        limit=lv.limit,
        **extra,
    )


def _hold(w: LoopWorker, task: TaskDef, lv: Level) -> None:
    rt = w.state.task(task.id)
    shared = lv.level in (BudgetLevel.PROJECT, BudgetLevel.DAY)
    # One question for the whole project (whichever loop got there first); a task's or
    # a loop's hold asks each time it holds (it holds once: the held task is not run).
    ask = (
        not shared
        or w.budget is None
        or w.budget.ledger.mark_once(f"stop|{lv.scope}|{lv.metric.value}|{lv.limit:g}")
    )
    escalation_id = short_id("e") if ask else None
    if lv.level is not BudgetLevel.TASK:
        w.state.budget_hold = lv.scope
        w.status = LoopStatus.PAUSED
    target = {
        BudgetLevel.TASK: f"{w.loop}/{task.id}",
        BudgetLevel.LOOP: w.loop,
    }.get(lv.level, f"--{lv.level.value}")
    where = f"`loops budget {target} {EXAMPLE_RAISE[lv.metric]}`"
    question = (
        f"The {lv.line()} is spent: no new agent call at that level. Answer with a raise "
        f"({RAISE_HELP}), `skip` to give up the task, or `stop` to stop the loop; or run {where}."
    )
    log.error(
        "Paused: %s (answer %s, or run %s)", lv.line(), escalation_id or "the open question", where
    )
    if escalation_id is not None:
        rt.ask(escalation_id, question)
        w.state.budget_escalations[escalation_id] = lv.scope
    w.save()
    _emit(w, BudgetExhausted, task, lv, escalation_id=escalation_id)
    if escalation_id is not None:
        w.wait_on_person(
            task.id,
            escalation_id,
            question,
            kind=EscalationKind.BUDGET,
            severity=Severity.HIGH,
            reason=f"budget spent: {lv.line()}",
        )


def _level_of(scope: str) -> BudgetLevel:
    if scope.startswith("task:"):
        return BudgetLevel.TASK
    if scope.startswith("loop:"):
        return BudgetLevel.LOOP
    return BudgetLevel(scope)


def answered(w: LoopWorker, event: EscalationAnswered) -> bool:
    """A person answered a budget question of this loop: apply the raise (`+5usd`...),
    `skip` or `stop`. False when the escalation is not a budget one."""
    scope = w.state.budget_escalations.pop(event.escalation_id, None)
    if scope is None:
        return False
    task_id, rt = next(
        ((tid, rt) for tid, rt in w.state.tasks.items() if rt.escalation_id == event.escalation_id),
        (None, None),
    )
    if rt is not None:
        if rt.phase is Phase.WAITING_HUMAN:
            rt.answered()
        rt.escalation_id = None
        rt.question = None
    if w.state.budget_hold == scope:
        w.state.budget_hold = None
    raises = parse_raises(event.answer)
    if raises and event.decision is None:
        for metric, amount in raises:
            apply_raise(w, scope, metric, amount, task_id=task_id)
        return True
    # Nothing raised: the next call that finds the budget spent asks again (the
    # project's and the day's question is otherwise asked once per limit).
    if w.budget is not None:
        for lv in w.budget.levels(task_id or ""):
            if lv.scope == scope:
                w.budget.ledger.unmark(f"stop|{lv.scope}|{lv.metric.value}|{lv.limit:g}")
    text = event.answer.lower()
    decision = event.decision
    if decision is None and re.search(r"\b(stop|abort)\b", text):
        decision = Decision.ABORT
    elif decision is None and re.search(r"\b(skip|give up)\b", text):
        decision = Decision.SKIP
    if decision is Decision.ABORT:
        w.stop_requested = "stopped by a person at the budget"
    elif decision is Decision.SKIP and task_id is not None:
        w.book.update(task_id, status=FileStatus.BLOCKED, last_result="budget spent; skipped")
        w.emit(TaskBlocked, task_id, reason="budget spent: skipped by a person")
        w.block_dependents()
    else:
        log.warning(
            "the answer to %s raised no budget (write e.g. %s): asking again at the next call",
            event.escalation_id,
            RAISE_HELP,
        )
    return True


def apply_raise(
    w: LoopWorker, scope: str, metric: BudgetMetric, amount: float, *, task_id: str | None
) -> None:
    """Raise `scope`'s `metric` limit in the ledger and tell every loop (`budget.raised`)."""
    if w.budget is None:
        return
    w.budget.ledger.raise_limit(scope, metric.value, amount)
    log.info("budget %s raised by %g %s", scope, amount, metric.value)
    w.emit(
        BudgetRaised,
        task_id if scope.startswith("task:") else None,
        level=_level_of(scope),
        scope=scope,
        metric=metric,
        amount=amount,
    )


def raised(w: LoopWorker, event: BudgetRaised) -> None:
    """A budget was raised (by any loop or `loops budget`): release what it held here.
    The next call checks again, and holds again if the raise was not enough."""
    if w.state.budget_hold == event.scope:
        w.state.budget_hold = None
    for esc, scope in list(w.state.budget_escalations.items()):
        if scope == event.scope:
            _release(w, esc, f"budget raised: {event.scope}")


def resumed(w: LoopWorker) -> bool:
    """`loops resume LOOP`: drop the loop's budget holds (the next call checks again,
    and holds again if nothing was raised)."""
    held, w.state.budget_hold = w.state.budget_hold, None
    for esc, scope in list(w.state.budget_escalations.items()):
        if not scope.startswith("task:"):
            _release(w, esc, "the loop was resumed")
    return held is not None


def _release(w: LoopWorker, esc: str, reason: str) -> None:
    del w.state.budget_escalations[esc]
    for rt in w.state.tasks.values():
        if rt.escalation_id == esc and rt.phase is Phase.WAITING_HUMAN:
            rt.answered()
            rt.question = None
    w.emit(EscalationExpired, escalation_id=esc, reason=reason)


def call_timeout(w: LoopWorker, task_id: str) -> float:
    """The next call's timeout (see `BudgetGuard.timeout_s`)."""
    if w.budget is None:
        return w.agent_timeout_s
    return w.budget.timeout_s(task_id, w.agent_timeout_s)


def started(w: LoopWorker) -> None:
    """A worker (re)starts: the calls of this loop a crash left open are closed, their
    wall time charged until now (their calls were counted when they began); a hold whose
    budget is no longer spent (a limit raised in the config files) is released."""
    if w.budget is None:
        return
    closed = w.budget.ledger.reap(loop_scope(w.loop), w.clock())
    if closed:
        log.warning("counted %d agent call(s) a crash left open against the budgets", closed)
    held = dict(w.state.budget_escalations)
    if w.state.budget_hold and w.state.budget_hold not in held.values():
        held[""] = w.state.budget_hold
    for esc, scope in held.items():
        task_id = scope.partition("/")[2] if scope.startswith("task:") else ""
        if any(lv.scope == scope and lv.exhausted for lv in w.budget.levels(task_id)):
            continue
        log.info("budget %s is no longer spent: released", scope)
        if w.state.budget_hold == scope:
            w.state.budget_hold = None
        if esc:
            _release(w, esc, f"budget no longer spent: {scope}")
    w.save()
