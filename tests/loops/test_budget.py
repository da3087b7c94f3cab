"""Budgets enforced by the worker (loops/budget.py), unit level: a real `LoopWorker` on
the bus (fakeredis and Redis), a real git repo, the `script:` agent reporting tokens and
cost (or nothing), and the guard's clock injected. Each test calls `iterate` and
`reactions.handle` itself, as the driver would, so nothing waits on time."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml
from pydantic import ValidationError

import events as ev
from bus import RedisBus
from bus.spend import PROJECT, SpendLedger, loop_scope
from infra.settings import Settings
from loops import reactions
from loops.books import SpecBook
from loops.budget import BudgetGuard, call_timeout
from loops.budget_config import Limits, LoopBudget, ProjectBudget, effective, parse_raises
from loops.harness import config_from_data
from loops.runners import AgentResult, make_runner
from loops.runtime import Phase
from loops.service import WorkerService
from loops.spec import parse_spec
from loops.worker import LoopWorker
from loops.workspace import git

SPEC = """
goal: "Greet"
tasks:
  - id: hello
    title: "Write hello.py"
    description: "Create hello.py"
    acceptance_criteria:
      - criterion: "hello.py runs"
        check: {type: script, run: "python hello.py"}
  - id: bye
    title: "Write bye.py"
    description: "Create bye.py"
    acceptance_criteria:
      - criterion: "bye.py runs"
        check: {type: script, run: "python bye.py"}
"""

PERSON = ev.Source(role=ev.Role.OPERATOR, instance="test")


class Clock:
    """Moves `tick` forward on every read: each agent call takes at least one tick."""

    def __init__(self, tick_s: float = 0.0) -> None:
        self.now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
        self.tick = timedelta(seconds=tick_s)

    def __call__(self) -> datetime:
        self.now += self.tick
        return self.now


@dataclass
class Loop:
    worker: LoopWorker
    bus: RedisBus

    def call(self, task_id: str | None = None) -> bool:
        """One turn of the driver: True if an agent call happened."""
        task = self.worker.next_task()
        if task is None or (task_id is not None and task.id != task_id):
            return False
        before = self.worker.state.iteration
        self.worker.iterate(task)
        return self.worker.state.iteration > before

    def react(self, event: ev.Event) -> None:
        self.bus.publish(event)
        reactions.handle(self.worker, event)

    def events(self, etype: str, *, every_loop: bool = False) -> list[ev.Event]:
        return [
            e
            for _, e in self.bus.replay(types={etype})
            if every_loop or e.loop in (None, self.worker.loop)
        ]


MakeLoop = Callable[..., Loop]


@pytest.fixture
def make_loop(bus: RedisBus, tmp_path: Path) -> Iterator[MakeLoop]:
    def make(
        budget: ProjectBudget,
        *,
        name: str = "spec",
        step: dict[str, object] | None = None,
        clock: Clock | None = None,
        agent: str | None = None,
    ) -> Loop:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("demo\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "init")
        script = tmp_path / f"{name}.yaml"
        script.write_text(yaml.safe_dump({"default": [step or {"reply": "still working"}]}))
        book = SpecBook(parse_spec(SPEC), repo / f"{name}.yaml", repo / ".loops" / "state", 50)
        runner = make_runner(agent or f"script:{script}", settings=Settings.from_env())
        service = WorkerService(bus, book, runner, repo, heartbeat_s=5)
        worker = service.worker
        worker.budget = BudgetGuard(
            SpendLedger(bus.client, bus.prefix), budget, worker.loop, clock or Clock()
        )
        worker.started()
        return Loop(worker, bus)

    yield make


PAID = {"reply": "still working", "tokens": {"input": 300, "output": 100}, "cost_usd": 0.1}


def test_a_task_budget_holds_that_task_and_the_loop_goes_on(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(task=Limits(calls=2)))
    assert lp.call("hello") and lp.call("hello")
    assert not lp.call("hello")  # the third call never starts
    spent = lp.events("budget.exhausted")
    assert len(spent) == 1 and isinstance(spent[0], ev.BudgetExhausted)
    assert (spent[0].level, spent[0].metric, spent[0].spent, spent[0].limit) == (
        ev.BudgetLevel.TASK,
        ev.BudgetMetric.CALLS,
        2,
        2,
    )
    assert spent[0].task_id == "hello" and spent[0].escalation_id
    asked = lp.events("escalation.raised")
    assert [e.escalation_id for e in asked] == [spent[0].escalation_id]  # type: ignore[attr-defined]
    assert lp.worker.state.tasks["hello"].phase is Phase.WAITING_HUMAN
    assert lp.worker.state.budget_hold is None
    assert lp.call("bye") and lp.call("bye")  # another task has its own budget
    assert lp.worker.state.iteration == 4


def test_a_loop_budget_in_dollars_holds_the_loop(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(loop=Limits(usd=0.25)), step=PAID)
    calls = 0
    while lp.call():
        calls += 1
    assert calls == 3  # $0.30 spent: the fourth call would pass $0.25
    assert lp.worker.state.budget_hold == loop_scope("spec")
    assert lp.worker.next_task() is None  # no task of the loop starts
    assert not lp.worker.can_progress()  # `loops up` ends with the question open
    (spent,) = lp.events("budget.exhausted")
    assert isinstance(spent, ev.BudgetExhausted)
    assert spent.metric is ev.BudgetMetric.USD and spent.spent == pytest.approx(0.3)


@pytest.mark.parametrize("level", ["project", "day"])
def test_the_project_and_the_day_hold_every_loop_with_one_question(
    make_loop: MakeLoop, level: str
) -> None:
    budget = ProjectBudget.model_validate({level: {"tokens": 1000}})
    a = make_loop(budget, name="a", step=PAID)
    b = make_loop(budget, name="b", step=PAID)
    assert a.call() and a.call() and b.call()  # 1200 tokens
    assert not a.call() and not b.call()
    assert a.worker.state.budget_hold == b.worker.state.budget_hold == level
    for lp in (a, b):  # neither loop goes on (b's task was mid-attempt, b has no question)
        assert lp.worker.next_task() is None and not lp.worker.can_progress()
    assert len(a.events("escalation.raised", every_loop=True)) == 1  # one for the project
    assert len(a.events("budget.exhausted", every_loop=True)) == 2  # each loop says why
    # A person raises it (what `loops budget --project +1000tokens` does).
    SpendLedger(a.bus.client, a.bus.prefix).raise_limit(level, "tokens", 1000)
    raised = ev.BudgetRaised(
        source=PERSON,
        level=ev.BudgetLevel(level),
        scope=level,
        metric=ev.BudgetMetric.TOKENS,
        amount=1000,
    )
    a.react(raised)
    reactions.handle(b.worker, raised)
    assert a.worker.state.budget_hold is None and b.worker.state.budget_hold is None
    assert a.call() and b.call()


def test_a_project_question_answered_without_a_raise_is_asked_again(
    make_loop: MakeLoop,
) -> None:
    budget = ProjectBudget(project=Limits(calls=1))
    a = make_loop(budget, name="a")
    b = make_loop(budget, name="b")
    assert a.call("hello") and not a.call("hello") and not b.call()
    (asked,) = a.events("escalation.raised", every_loop=True)
    a.react(
        ev.EscalationAnswered(
            source=PERSON,
            escalation_id=asked.escalation_id,  # type: ignore[attr-defined]
            answer="skip it",
            by="me",
        )
    )
    assert a.worker.book.record("hello").status.value == "blocked"
    assert not a.call("bye")  # the project is still spent: asked again, not stuck silent
    assert len(a.events("escalation.raised", every_loop=True)) == 2
    assert b.worker.state.budget_hold == PROJECT


def test_a_warning_fires_once_per_limit(
    make_loop: MakeLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loops.worker")
    lp = make_loop(ProjectBudget(loop=Limits(usd=1.0)), step=PAID)
    for _ in range(9):
        assert lp.call()  # $0.90: warned at $0.80, once
    warned = lp.events("budget.warned")
    assert len(warned) == 1 and isinstance(warned[0], ev.BudgetWarned)
    assert warned[0].spent == pytest.approx(0.8) and warned[0].threshold == 0.8
    assert sum("Budget warning" in r.getMessage() for r in caplog.records) == 1
    # A restarted worker (a new guard on the same ledger) does not warn again.
    guard = lp.worker.budget
    assert guard is not None
    lp.worker.budget = BudgetGuard(guard.ledger, guard.budget, lp.worker.loop, Clock())
    assert lp.call()  # the tenth call: $1.00
    assert not lp.call()  # spent
    assert len(lp.events("budget.warned")) == 1


def test_raising_a_budget_by_an_answer_resumes_the_loop(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(loop=Limits(usd=0.25)), step=PAID)
    while lp.call():
        pass
    (spent,) = lp.events("budget.exhausted")
    esc = spent.escalation_id  # type: ignore[attr-defined]
    lp.react(ev.EscalationAnswered(source=PERSON, escalation_id=esc, answer="ok, +$0.2", by="me"))
    (raised,) = lp.events("budget.raised")
    assert isinstance(raised, ev.BudgetRaised) and raised.amount == pytest.approx(0.2)
    assert lp.worker.state.budget_hold is None
    assert lp.call() and lp.call()  # $0.40, then $0.50 of $0.45
    assert not lp.call()  # spent again: a new question
    assert len(lp.events("escalation.raised")) == 2


def test_an_answer_can_stop_the_work(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(task=Limits(calls=1)))
    assert lp.call("hello") and not lp.call("hello")
    (spent,) = lp.events("budget.exhausted")
    esc = spent.escalation_id  # type: ignore[attr-defined]
    lp.react(ev.EscalationAnswered(source=PERSON, escalation_id=esc, answer="skip", by="me"))
    assert lp.worker.book.record("hello").status.value == "blocked"
    assert lp.call("bye")


def test_a_loop_that_never_reports_usage_is_capped_by_calls(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(loop=Limits(usd=1.0, tokens=10, calls=3)))
    calls = 0
    while lp.call():
        calls += 1
    assert calls == 3
    (spent,) = lp.events("budget.exhausted")
    assert spent.metric is ev.BudgetMetric.CALLS  # type: ignore[attr-defined]


def test_a_loop_that_never_reports_usage_is_capped_by_wall_time(make_loop: MakeLoop) -> None:
    # Every call takes at least 60s on the guard's clock, whatever the agent says.
    lp = make_loop(ProjectBudget(task=Limits(wall_s=150)), clock=Clock(tick_s=60))
    calls = 0
    while lp.call("hello"):
        calls += 1
    assert 1 <= calls <= 3
    (spent,) = lp.events("budget.exhausted")
    assert spent.metric is ev.BudgetMetric.WALL_S  # type: ignore[attr-defined]
    assert spent.spent >= 150  # type: ignore[attr-defined]


def test_a_hard_ceiling_cuts_the_call_to_the_time_left(make_loop: MakeLoop) -> None:
    soft = make_loop(ProjectBudget(task=Limits(wall_s=600)), name="soft")
    assert call_timeout(soft.worker, "hello") == soft.worker.agent_timeout_s
    hard = make_loop(ProjectBudget(task=Limits(wall_s=600), hard_ceiling=True), name="hard")
    assert call_timeout(hard.worker, "hello") == 600


def test_a_hard_ceiling_kills_a_call_that_would_pass_the_wall_time(make_loop: MakeLoop) -> None:
    budget = ProjectBudget(task=Limits(wall_s=1), hard_ceiling=True)
    lp = make_loop(budget, step={"sleep": 120, "reply": "done at last"})
    assert lp.call("hello")
    (finished,) = lp.events("iteration.finished")
    assert finished.failure is ev.FailureKind.TIMEOUT  # type: ignore[attr-defined]
    assert "timeout of 1s" in (finished.failure_detail or "")  # type: ignore[attr-defined]


def test_resume_releases_a_loop_hold_and_the_budget_holds_again(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(loop=Limits(calls=1)))
    assert lp.call() and not lp.call()
    lp.react(ev.LoopResume(source=PERSON, loop=lp.worker.loop))
    assert lp.worker.state.budget_hold is None
    assert not lp.call()  # nothing was raised: held again, asked again
    assert len(lp.events("escalation.raised")) == 2
    assert lp.worker.state.iteration == 1


def test_a_limit_raised_in_the_config_releases_the_hold_at_restart(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(loop=Limits(calls=1), task=Limits(calls=5)))
    assert lp.call() and not lp.call()
    guard = lp.worker.budget
    assert guard is not None and lp.worker.state.budget_hold == loop_scope("spec")
    # The operator edits config.json and starts the loop again.
    lp.worker.budget = BudgetGuard(
        guard.ledger, ProjectBudget(loop=Limits(calls=3)), lp.worker.loop, Clock()
    )
    lp.worker.started()
    assert lp.worker.state.budget_hold is None and not lp.worker.state.budget_escalations
    assert len(lp.events("escalation.expired")) == 1
    assert lp.call()


def test_a_lost_redis_after_a_call_keeps_its_work_and_its_spend(bus: RedisBus) -> None:
    ledger = SpendLedger(bus.client, bus.prefix)
    clock = Clock(tick_s=10)
    guard = BudgetGuard(ledger, ProjectBudget(), "l1", clock)
    guard.begin("T-1")
    with socket.socket() as s:  # a port nobody listens on: Redis is gone
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard.ledger = SpendLedger(redis.Redis(port=port, socket_connect_timeout=0.5), bus.prefix)
    result = AgentResult(reply="x", tokens=ev.TokenUsage(input_tokens=7), cost_usd=0.5)
    guard.end(result)  # no exception: the iteration goes on and commits its work
    assert len(guard.unsent) == 1
    guard.ledger = ledger  # Redis is back: the next call sends it first
    guard.flush()
    spent = ledger.spent(loop_scope("l1"), clock())
    assert (spent.calls, spent.tokens, spent.usd) == (1, 7, 0.5) and not guard.unsent


def test_budget_settings() -> None:
    seed = {"name": "Loop 1", "specs_dir": "specs"}
    assert config_from_data(seed).budget is None  # the seed's files stay valid
    own = config_from_data({**seed, "budget": {"task": {"usd": 2}, "warn_at": 0.5}}).budget
    with pytest.raises(ev.ValidationFailed):
        config_from_data({**seed, "budget": {"project": {"usd": 2}}})  # project.json's
    with pytest.raises(ValidationError):
        Limits.model_validate({"usd": -1})
    project = ProjectBudget(task=Limits(usd=5, calls=10), project=Limits(usd=50))
    merged = effective(project, own, max_usd=20)
    assert merged.task == Limits(usd=2, calls=10)  # the loop's usd, the project's calls
    assert merged.loop == Limits(usd=20)  # `loops run --max-cost` caps the loop
    assert merged.warn_at == 0.5 and merged.project == Limits(usd=50)
    up = effective(project, LoopBudget(), max_tokens=1000, flags_level=ev.BudgetLevel.PROJECT)
    assert up.project == Limits(usd=50, tokens=1000)


def test_reading_a_raise() -> None:
    assert parse_raises("+5usd") == [(ev.BudgetMetric.USD, 5)]
    assert parse_raises("ok +$2.5 and +100k tokens") == [
        (ev.BudgetMetric.USD, 2.5),
        (ev.BudgetMetric.TOKENS, 100_000),
    ]
    assert parse_raises("+3 calls +30m +2h +10s") == [
        (ev.BudgetMetric.CALLS, 3),
        (ev.BudgetMetric.WALL_S, 1800),
        (ev.BudgetMetric.WALL_S, 7200),
        (ev.BudgetMetric.WALL_S, 10),
    ]
    assert parse_raises("5 usd more") == [] and parse_raises("+0usd") == []


def test_claude_stream_json_cost_stops_a_dollar_budget(
    make_loop: MakeLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claude runner on a CLI that prints Claude Code's stream-json: every run
    # reports `total_cost_usd` 0.0421, never a promise.
    fake = Path(__file__).resolve().parent.parent / "fakes" / "fake_claude.py"
    monkeypatch.setenv("LOOPS_CLAUDE_BIN", f"{sys.executable} {fake}")
    monkeypatch.setenv("FAKE_CLAUDE_REPLY", "still working")
    monkeypatch.setenv("LOOPS_SANDBOX_ENV", "FAKE_CLAUDE_*")
    lp = make_loop(ProjectBudget(task=Limits(usd=0.1)), agent="claude")
    calls = 0
    while lp.call("hello"):
        calls += 1
    assert calls == 3  # $0.0842 after two: a third; $0.1263 after it: no fourth
    finished = lp.events("iteration.finished")
    assert [e.cost_usd for e in finished] == [0.0421] * 3  # type: ignore[attr-defined]
    (spent,) = lp.events("budget.exhausted")
    assert spent.metric is ev.BudgetMetric.USD  # type: ignore[attr-defined]
    assert spent.spent == pytest.approx(3 * 0.0421)  # type: ignore[attr-defined]


def test_a_call_without_a_cost_report_counts_at_its_tokens_price(make_loop: MakeLoop) -> None:
    # 1M input tokens of claude-sonnet-4-6 at $3 per million, no cost reported.
    step = {"reply": "still working", "tokens": {"input": 1_000_000, "output": 0}}
    lp = make_loop(ProjectBudget(task=Limits(usd=5)), step=step)
    lp.worker.book.model = "claude-sonnet-4-6"
    assert lp.call("hello") and lp.call("hello")
    assert not lp.call("hello")  # $6 of $5
    (spent,) = lp.events("budget.exhausted")
    assert spent.metric is ev.BudgetMetric.USD and spent.spent == pytest.approx(6)  # type: ignore[attr-defined]


def test_the_ledger_counts_every_level_even_without_limits(make_loop: MakeLoop) -> None:
    lp = make_loop(ProjectBudget(), step=PAID)
    assert lp.call() and lp.call()
    ledger = SpendLedger(lp.bus.client, lp.bus.prefix)
    now = datetime.now(UTC) + timedelta(days=1000)
    for scope in (PROJECT, loop_scope("spec")):
        spent = ledger.spent(scope, now)
        assert (spent.calls, spent.tokens, spent.usd) == (2, 800, pytest.approx(0.2))
    assert not lp.events("budget.warned") and not lp.events("budget.exhausted")
