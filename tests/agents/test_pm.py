"""The PM: cross-loop dependencies, priority under a concurrency limit, file overlap,
progress."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agents.pm import PMConfig, ProjectManager
from events import (
    Event,
    LoopStarted,
    LoopStatus,
    LoopStopped,
    MergeCompleted,
    ProgressReported,
    TaskBlocked,
    TaskHeld,
    TaskHint,
    TaskPassed,
    TaskReleased,
    TaskStarted,
    TokenUsage,
)
from tests.agents.helpers import WORKER, Clock, iteration


def started(loop: str, total: int = 3, passed: int = 0) -> LoopStarted:
    return LoopStarted(
        source=WORKER,
        loop=loop,
        agent="claude",
        pid=1,
        host="h",
        tasks_total=total,
        tasks_passed=passed,
    )


def task(loop: str, task_id: str) -> TaskStarted:
    return TaskStarted(source=WORKER, loop=loop, task_id=task_id, attempt=1)


def passed(loop: str, task_id: str, **kw: Any) -> TaskPassed:
    return TaskPassed(
        source=WORKER, loop=loop, task_id=task_id, attempt=1, commit="c", merged_commit="m", **kw
    )


def feed(pm: ProjectManager, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        out += pm.handle(e)
    return out


def of(kind: type[Event], events: list[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_task_waiting_on_another_loop_is_held_then_released_on_merge() -> None:
    pm = ProjectManager()
    out = feed(
        pm,
        [
            started("api"),
            started("ui"),
            TaskBlocked(
                source=WORKER, loop="ui", task_id="U1", reason="needs API", blocked_by="api/A2"
            ),
        ],
    )
    [held] = of(TaskHeld, out)
    assert (held.loop, held.task_id, held.until_task) == ("ui", "U1", "api/A2")
    assert of(TaskReleased, feed(pm, [passed("api", "A1")])) == []
    out = feed(
        pm,
        [
            MergeCompleted(
                source=WORKER,
                loop="api",
                task_id="A2",
                commit="c",
                merged_commit="m",
                main_before="b",
            )
        ],
    )
    [rel] = of(TaskReleased, out)
    assert (rel.loop, rel.task_id) == ("ui", "U1") and "api/A2" in rel.reason
    assert of(TaskReleased, feed(pm, [passed("api", "A2")])) == []  # no second release


def test_dependency_already_merged_is_released_at_once() -> None:
    pm = ProjectManager()
    feed(pm, [started("api"), passed("api", "A2")])
    out = feed(
        pm, [TaskBlocked(source=WORKER, loop="ui", task_id="U1", reason="dep", blocked_by="api/A2")]
    )
    assert of(TaskHeld, out) == []
    [rel] = of(TaskReleased, out)
    assert rel.task_id == "U1"


def test_a_local_block_is_not_a_cross_loop_dependency() -> None:
    pm = ProjectManager()
    out = feed(
        pm,
        [
            started("ui"),
            TaskBlocked(source=WORKER, loop="ui", task_id="U2", reason="x", blocked_by="U1"),
        ],
    )
    assert of(TaskHeld, out) == []


def test_priority_holds_lower_loops_over_the_concurrency_and_releases_when_a_slot_frees() -> None:
    pm = ProjectManager(PMConfig(priorities={"a": 3, "b": 2, "c": 1}, concurrency=2))
    out = feed(pm, [started("a"), task("a", "A1"), started("b"), task("b", "B1")])
    assert of(TaskHeld, out) == []
    out = feed(pm, [started("c"), task("c", "C1")])
    [held] = of(TaskHeld, out)
    assert (held.loop, held.task_id) == ("c", "C1") and "priority" in held.reason
    out = feed(pm, [LoopStopped(source=WORKER, loop="a", status=LoopStatus.STOPPED, reason="done")])
    [rel] = of(TaskReleased, out)
    assert (rel.loop, rel.task_id) == ("c", "C1") and "slot" in rel.reason


def test_under_the_concurrency_nothing_is_held() -> None:
    pm = ProjectManager(PMConfig(priorities={"a": 1}, concurrency=3))
    out = feed(pm, [started(x) for x in "abc"] + [task(x, "T") for x in "abc"])
    assert of(TaskHeld, out) == []


def test_file_overlap_holds_the_lower_priority_loop_until_the_other_merges() -> None:
    clock = Clock()
    pm = ProjectManager(PMConfig(priorities={"core": 5, "docs": 1}), clock=clock)
    feed(pm, [started("core"), task("core", "C1"), started("docs"), task("docs", "D1")])
    out = feed(
        pm, [iteration("core", clock.now, 1, task_id="C1", changed_files=["src/cli.py", "a.py"])]
    )
    out += feed(pm, [iteration("docs", clock.now, 1, task_id="D1", changed_files=["README.md"])])
    assert of(TaskHeld, out) == []
    out = feed(pm, [iteration("docs", clock.now, 2, task_id="D1", changed_files=["src/cli.py"])])
    [held] = of(TaskHeld, out)
    assert (held.loop, held.task_id, held.until_task) == ("docs", "D1", "core/C1")
    assert "src/cli.py" in held.reason
    out = feed(
        pm,
        [
            MergeCompleted(
                source=WORKER,
                loop="core",
                task_id="C1",
                commit="c",
                merged_commit="m",
                main_before="b",
            )
        ],
    )
    [rel] = of(TaskReleased, out)
    assert (rel.loop, rel.task_id) == ("docs", "D1") and "rebase onto main" in rel.reason


def test_file_overlap_in_rebase_mode_sends_one_hint() -> None:
    clock = Clock()
    pm = ProjectManager(PMConfig(priorities={"core": 5}, overlap_action="rebase"), clock=clock)
    feed(pm, [started("core"), task("core", "C1"), started("docs"), task("docs", "D1")])
    out = feed(pm, [iteration("core", clock.now, 1, task_id="C1", changed_files=["x.py"])])
    out += feed(pm, [iteration("docs", clock.now, 1, task_id="D1", changed_files=["x.py"])])
    out += feed(pm, [iteration("docs", clock.now, 2, task_id="D1", changed_files=["x.py"])])
    assert of(TaskHeld, out) == []
    [hint] = of(TaskHint, out)
    assert hint.loop == "docs" and hint.task_id == "D1" and "rebase" in hint.text


def test_overlap_ignore_patterns() -> None:
    clock = Clock()
    pm = ProjectManager(PMConfig(overlap_ignore=("*.lock",)), clock=clock)
    feed(pm, [started("a"), started("b")])
    out = feed(pm, [iteration("a", clock.now, 1, changed_files=["uv.lock"])])
    out += feed(pm, [iteration("b", clock.now, 1, changed_files=["uv.lock"])])
    assert of(TaskHeld, out) == []


def test_progress_summary() -> None:
    clock = Clock()
    pm = ProjectManager(clock=clock)
    feed(pm, [started("a", total=4, passed=1).model_copy(update={"ts": clock.now})])
    tokens = TokenUsage(input_tokens=1000, output_tokens=500)
    feed(pm, [iteration("a", clock.now, n, tokens=tokens, cost_usd=0.25) for n in (1, 2)])
    clock.advance(1800)
    out = feed(pm, [passed("a", "T2")])
    [report] = of(ProgressReported, out)
    assert (report.loop, report.passed, report.total) == ("a", 2, 4)
    assert report.tokens == 3000 and report.cost_usd == 0.5
    assert report.rate_per_hour == 2.0 and report.eta_s == 3600.0
    # Periodic reports: on the first tick, then every interval.
    assert len(of(ProgressReported, pm.tick(clock.now))) == 1
    assert pm.tick(clock.now + timedelta(seconds=30)) == []
    assert len(of(ProgressReported, pm.tick(clock.now + timedelta(seconds=61)))) == 1


def test_duplicate_deliveries_are_counted_once() -> None:
    clock = Clock()
    pm = ProjectManager(clock=clock)
    it = iteration("a", clock.now, 1, tokens=TokenUsage(output_tokens=10), cost_usd=1.0)
    feed(pm, [started("a"), it, it])
    assert pm.progress("a").tokens == 10 and pm.progress("a").cost_usd == 1.0


def test_a_restarted_pm_publishes_nothing_twice() -> None:
    history: list[Event] = [
        started("api"),
        started("ui"),
        TaskBlocked(source=WORKER, loop="ui", task_id="U1", reason="dep", blocked_by="api/A2"),
    ]
    first = ProjectManager()
    history += feed(first, history)
    assert len(of(TaskHeld, history)) == 1
    second = ProjectManager()
    second.warm_up(history)
    assert of(TaskHeld, second.reconcile()) == []
    out = feed(second, [passed("api", "A2")])
    assert len(of(TaskReleased, out)) == 1


def test_dependencies_from_configuration_are_held_from_the_start() -> None:
    pm = ProjectManager(
        PMConfig(dependencies={"ui/U1": ["api/A1", "api/A2", "U0"], "ui/U2": ["U1"]})
    )
    [held] = of(TaskHeld, pm.reconcile())
    assert (held.loop, held.task_id, held.until_task) == ("ui", "U1", "api/A1")
    assert "api/A1, api/A2" in held.reason
    assert of(TaskReleased, feed(pm, [passed("api", "A1")])) == []
    [rel] = of(TaskReleased, feed(pm, [passed("api", "A2")]))
    assert (rel.loop, rel.task_id) == ("ui", "U1")
