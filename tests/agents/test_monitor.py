"""The monitor's rules (positive and negative), the not-stuck cases, its actions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agents.monitor import Monitor
from agents.policy import Rule, load_policy, parse_policy
from agents.refiner import RefineFailed, RefineRequest
from events import (
    Decision,
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    FailureKind,
    IterationStarted,
    LoopPause,
    LoopStatus,
    LoopStop,
    LoopStopped,
    MonitorAction,
    MonitorActionKind,
    Role,
    Severity,
    Source,
    TaskHint,
    TaskReset,
    ValidationFailed,
)
from infra.store import Store
from tests.agents.helpers import WORKER, Clock, failed, heartbeat, iteration

A = MonitorActionKind
OP = Source(role=Role.OPERATOR, instance="cli")


def alive(host: str, pid: int) -> bool | None:
    return True


def actions(events: list[Event]) -> list[MonitorAction]:
    return [e for e in events if isinstance(e, MonitorAction)]


def make(store: Store, clock: Clock, **kw: object) -> Monitor:
    kw.setdefault("pid_alive", alive)
    return Monitor(store, clock=clock, **kw)  # type: ignore[arg-type]


def feed(mon: Monitor, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        out += mon.handle(e)
    return out


def run_iterations(mon: Monitor, clock: Clock, loop: str, items: list[Event]) -> list[Event]:
    """Heartbeat, then each iteration one second apart, ticking as time passes."""
    out: list[Event] = []
    for e in items:
        clock.advance(1)
        out += mon.handle(heartbeat(loop, clock.now))
        out += mon.handle(e.model_copy(update={"ts": clock.now}))
        out += mon.tick(clock.now)
    return out


# --------------------------------------------------------------------------- stale / dead


def test_stale_heartbeat_restarts_the_worker(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    mon.handle(heartbeat("a", clock.now))
    assert mon.tick(clock.advance(2.0)) == []  # exactly 2 intervals: not yet
    out = mon.tick(clock.advance(0.1))
    [act] = actions(out)
    assert act.action == A.RESTART_WORKER and act.rule == Rule.STALE_HEARTBEAT
    assert act.incident_id.startswith("i-") and "no heartbeat" in act.reason
    assert any(isinstance(e, LoopStop) and e.restart and e.loop == "a" for e in out)
    assert mon.tick(clock.advance(1)) == []  # the same incident: no second action


def test_fresh_heartbeats_are_not_stale(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    for _ in range(10):
        assert mon.handle(heartbeat("a", clock.now)) == []
        assert mon.tick(clock.advance(1.5)) == []


def test_dead_pid_on_this_host_restarts(store: Store, clock: Clock) -> None:
    mon = make(store, clock, pid_alive=lambda host, pid: False)
    mon.handle(heartbeat("a", clock.now))
    [act] = actions(mon.tick(clock.advance(0.1)))
    assert act.rule == Rule.WORKER_DEAD and act.action == A.RESTART_WORKER


def test_other_host_pid_is_not_judged(store: Store, clock: Clock) -> None:
    mon = make(store, clock, pid_alive=lambda host, pid: None)
    mon.handle(heartbeat("a", clock.now))
    assert mon.tick(clock.advance(0.5)) == []


def test_loop_stopped_with_error_is_dead_stopped_cleanly_is_not(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    mon.handle(heartbeat("a", clock.now))
    mon.handle(heartbeat("b", clock.now))
    clock.advance(0.5)
    mon.handle(
        LoopStopped(source=WORKER, loop="a", ts=clock.now, status=LoopStatus.ERROR, reason="boom")
    )
    mon.handle(
        LoopStopped(source=WORKER, loop="b", ts=clock.now, status=LoopStatus.STOPPED, reason="done")
    )
    out = mon.tick(clock.advance(0.1))
    assert [(a.loop, a.rule) for a in actions(out)] == [("a", Rule.WORKER_DEAD)]
    assert mon.tick(clock.advance(60)) == [] or all(
        a.loop == "a" for a in actions(mon.tick(clock.now))
    )


def test_mass_death_raises_one_critical_incident_instead_of_restarts(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    for loop in ("a", "b", "c", "d"):
        mon.handle(heartbeat(loop, clock.now))
    clock.advance(0.5)
    for loop in ("a", "b", "c"):
        mon.handle(heartbeat(loop, clock.now))
    # d is stale; a, b and c have missed a heartbeat: d's restart waits for them.
    assert mon.tick(clock.advance(1.8)) == []
    out = mon.tick(clock.advance(0.5))  # a, b, c are stale too: 4 died together
    escalations = [e for e in out if isinstance(e, EscalationRaised)]
    assert len(escalations) == 1
    assert escalations[0].severity == Severity.CRITICAL
    assert escalations[0].kind == EscalationKind.INCIDENT
    assert not any(isinstance(e, LoopStop) for e in out)
    assert [a.rule for a in actions(out)] == [Rule.MASS_DEATH]
    assert mon.tick(clock.advance(5)) == []


def test_two_deaths_are_not_mass_death(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    for loop in ("a", "b", "c"):
        mon.handle(heartbeat(loop, clock.now))
    clock.advance(1)
    mon.handle(heartbeat("c", clock.now))
    assert mon.tick(clock.advance(1.5)) == []  # c has missed one: could be a third
    mon.handle(heartbeat("c", clock.advance(0.1)))  # it has not
    out = mon.tick(clock.advance(0.1))
    assert sorted(a.loop or "" for a in actions(out)) == ["a", "b"]
    assert all(a.action == A.RESTART_WORKER for a in actions(out))


# --------------------------------------------------------------------------- iteration rules


def test_no_changes_resets_the_task_with_a_hint(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [iteration("a", clock.now, 1)]
    items += [
        iteration("a", clock.now, n, changed_files=[], commands=["pytest -x"]) for n in (2, 3, 4)
    ]
    out = run_iterations(mon, clock, "a", items)
    [act] = actions(out)
    assert act.rule == Rule.NO_CHANGES and act.action == A.RESET_TASK
    [reset] = [e for e in out if isinstance(e, TaskReset)]
    assert reset.task_id == "T1" and reset.hint and "changed no file" in reset.hint
    assert "pytest -x" in reset.hint


def test_changes_every_other_iteration_is_not_stuck(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        iteration("a", clock.now, n, changed_files=[] if n % 2 else ["a.py"]) for n in range(1, 12)
    ]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_repeated_failure_resets_with_the_error_in_the_hint(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        failed("a", clock.now, n, f"ImportError: cannot import name 'foo' (line {n})")
        for n in (1, 2, 3)
    ]
    out = run_iterations(mon, clock, "a", items)
    [act] = actions(out)
    assert act.rule == Rule.REPEATED_FAILURE and act.action == A.RESET_TASK
    assert act.hint and "ImportError: cannot import name 'foo'" in act.hint


def test_different_failures_are_not_repeated(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    details = ["ImportError: foo", "SyntaxError in bar.py", "AssertionError: 3 != 4"]
    items: list[Event] = [failed("a", clock.now, n, d) for n, d in enumerate(details, 1)]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_same_failure_kind_other_detail_is_not_repeated(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        failed(
            "a",
            clock.now,
            1,
            "x",
            failure=FailureKind.TIMEOUT,
            failure_detail="timed out after 600s",
        ),
        failed(
            "a",
            clock.now,
            2,
            "y",
            failure=FailureKind.EMPTY_REPLY,
            failure_detail="timed out after 600s",
        ),
        failed(
            "a",
            clock.now,
            3,
            "z",
            failure=FailureKind.TIMEOUT,
            failure_detail="timed out after 600s",
        ),
    ]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_permission_denials_repeating(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        iteration("a", clock.now, n, permission_denials=2, commands=["rm -rf build"])
        for n in (1, 2, 3)
    ]
    out = run_iterations(mon, clock, "a", items)
    [act] = actions(out)
    assert act.rule == Rule.PERMISSION_DENIALS
    assert act.hint and "denied" in act.hint and "rm -rf build" in act.hint


def test_a_single_permission_denial_is_fine(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        iteration("a", clock.now, n, permission_denials=1 if n == 3 else 0) for n in range(1, 8)
    ]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_reply_collapse_restarts_the_worker(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [iteration("a", clock.now, n, reply_chars=3000 + n) for n in range(1, 7)]
    items += [iteration("a", clock.now, n, reply_chars=40) for n in (7, 8)]
    out = run_iterations(mon, clock, "a", items)
    [act] = actions(out)
    assert act.rule == Rule.REPLY_COLLAPSE and act.action == A.RESTART_WORKER
    assert "median" in act.reason


def test_short_replies_from_the_start_or_one_dip_are_not_collapse(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    items: list[Event] = [iteration("a", clock.now, n, reply_chars=50) for n in range(1, 9)]
    items += [iteration("b", clock.now, n, reply_chars=3000) for n in range(1, 7)]
    items += [
        iteration("b", clock.now, 7, reply_chars=10),
        iteration("b", clock.now, 8, reply_chars=2900),
    ]
    out: list[Event] = []
    for e in items:
        clock.advance(1)
        out += mon.handle(heartbeat(e.loop or "", clock.now))
        out += mon.handle(e.model_copy(update={"ts": clock.now}))
    assert actions(out) == []


# --------------------------------------------------------------------------- not stuck


def test_waiting_out_a_usage_limit_is_not_stuck(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    until = clock.now + timedelta(hours=2)
    out: list[Event] = []
    for n in range(1, 8):
        clock.advance(1)
        out += mon.handle(heartbeat("a", clock.now, status=LoopStatus.WAITING, waiting_until=until))
        out += mon.handle(
            failed(
                "a",
                clock.now,
                n,
                "usage limit reached",
                failure=FailureKind.USAGE_LIMIT,
                changed_files=[],
                reply_chars=0,
                retry_at=until,
                counted=False,
            )
        )
        out += mon.tick(clock.now)
    assert actions(out) == []


def test_usage_limit_iterations_with_retry_at_are_not_stuck(store: Store, clock: Clock) -> None:
    """Even when counted by mistake and without a WAITING heartbeat."""
    mon = make(store, clock)
    items: list[Event] = [iteration("a", clock.now, n, reply_chars=3000) for n in range(1, 7)]
    items += [
        failed(
            "a",
            clock.now,
            n,
            "limit",
            failure=FailureKind.USAGE_LIMIT,
            changed_files=[],
            reply_chars=0,
            retry_at=clock.now + timedelta(hours=1),
        )
        for n in range(7, 12)
    ]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_healthy_but_slow_agent_is_not_stuck(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    mon.handle(
        IterationStarted(
            source=WORKER,
            loop="a",
            ts=clock.now,
            task_id="T1",
            iteration=1,
            attempt=1,
            agent="claude",
            prompt_bytes=100,
        )
    )
    out: list[Event] = []
    for _ in range(1800):  # a 30-minute iteration, heartbeats every second
        out += mon.handle(heartbeat("a", clock.now))
        out += mon.tick(clock.advance(1))
    out += mon.handle(iteration("a", clock.now, 1, duration_s=1800))
    assert actions(out) == []


# --------------------------------------------------------------------------- policy


def test_escalates_after_the_configured_number_of_actions(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out: list[Event] = []
    n = 0
    for _ in range(3):
        items: list[Event] = []
        for _ in range(3):
            n += 1
            items.append(iteration("a", clock.now, n, changed_files=[]))
        out += run_iterations(mon, clock, "a", items)
    kinds = [a.action for a in actions(out)]
    assert kinds == [A.RESET_TASK, A.RESET_TASK, A.ESCALATE, A.BLOCK_TASK]
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert esc.kind == EscalationKind.INCIDENT and esc.task_id == "T1"
    assert "blocked" in esc.question
    # Further incidents on the same loop/rule/task wait for the person.
    more = run_iterations(
        mon, clock, "a", [iteration("a", clock.now, 99 + k, changed_files=[]) for k in range(3)]
    )
    assert actions(more) == []
    # The answer "retry" lets the monitor try again and unblocks the task.
    answer = EscalationAnswered(source=OP, escalation_id=esc.escalation_id, answer="retry", by="me")
    out = mon.handle(answer)
    assert any(isinstance(e, TaskReset) and e.hint is None for e in out)
    assert mon.handle(answer) == []


def test_escalates_when_the_incident_outlives_the_action(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    mon.handle(heartbeat("a", clock.now))
    assert actions(mon.tick(clock.advance(3)))[0].action == A.RESTART_WORKER
    assert mon.tick(clock.advance(60)) == []
    out = mon.tick(clock.advance(61))  # policy: stale_heartbeat escalates after 120 s
    assert [a.action for a in actions(out)] == [A.ESCALATE]
    assert mon.tick(clock.advance(200)) == []


def test_pause_on_escalation(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [iteration("a", clock.now, n, permission_denials=1) for n in range(1, 7)]
    out = run_iterations(mon, clock, "a", items)
    assert [a.action for a in actions(out)] == [A.RESET_TASK, A.ESCALATE, A.PAUSE_LOOP]
    assert any(isinstance(e, LoopPause) for e in out)


class FakeRefiner:
    def __init__(self, fail: bool = False) -> None:
        self.requests: list[RefineRequest] = []
        self.fail = fail

    def refine(self, request: RefineRequest) -> str:
        self.requests.append(request)
        if self.fail:
            raise RefineFailed("model unavailable")
        return "Split T1: (1) add the parser (2) wire it into the CLI"


def varied() -> list[Event]:
    details = [
        "ImportError: a",
        "SyntaxError: b",
        "AssertionError: c",
        "TypeError: d",
        "KeyError: e",
    ]
    return [failed("a", Clock().now, n, d) for n, d in enumerate(details, 1)]


def test_refine_proposal_goes_to_a_person_then_to_the_loop(store: Store, clock: Clock) -> None:
    refiner = FakeRefiner()
    mon = make(store, clock, refiner=refiner)
    out = run_iterations(mon, clock, "a", varied())
    [act] = actions(out)
    assert act.action == A.REFINE_TASK and act.rule == Rule.VARIED_FAILURES
    assert len(refiner.requests[0].failures) == 5
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert esc.kind == EscalationKind.APPROVAL and "Split T1" in esc.question
    assert not any(isinstance(e, TaskHint) for e in out)
    ans = EscalationAnswered(
        source=OP, escalation_id=esc.escalation_id, answer="", decision=Decision.APPROVE, by="me"
    )
    [hint] = [e for e in mon.handle(ans) if isinstance(e, TaskHint)]
    assert hint.loop == "a" and hint.task_id == "T1" and "Split T1" in hint.text


def test_refine_applied_directly_when_policy_allows(store: Store, clock: Clock) -> None:
    policy = load_policy().model_copy(update={"refine": parse_policy_refine(True)})
    mon = make(store, clock, refiner=FakeRefiner(), policy=policy)
    out = run_iterations(mon, clock, "a", varied())
    assert any(isinstance(e, TaskHint) for e in out)
    assert not any(isinstance(e, EscalationRaised) for e in out)


def test_refine_failure_escalates(store: Store, clock: Clock) -> None:
    mon = make(store, clock, refiner=FakeRefiner(fail=True))
    out = run_iterations(mon, clock, "a", varied())
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert "model unavailable" in esc.question


def parse_policy_refine(apply: bool) -> object:
    from agents.policy import RefinePolicy

    return RefinePolicy(apply=apply)


def test_policy_errors_name_the_field() -> None:
    with pytest.raises(ValidationFailed) as err:
        parse_policy({"rules": {"no_changes": {"action": "explode"}}}, "p.yaml")
    assert "p.yaml: rules.no_changes.action" in str(err.value)
    with pytest.raises(ValidationFailed, match="on_escalate is pause_loop or block_task"):
        parse_policy(
            {"rules": {"no_changes": {"action": "reset_task", "on_escalate": "reset_task"}}}
        )


# --------------------------------------------------------------------------- restarts


def test_a_restarted_monitor_does_not_act_twice(store: Store, clock: Clock) -> None:
    history: list[Event] = [heartbeat("a", clock.now)]
    first = make(store, clock)
    first.warm_up(history)
    out = first.tick(clock.advance(2.5))
    assert len(actions(out)) == 1
    history += out
    second = make(store, clock)  # same store, state rebuilt from the stream
    second.warm_up(history)
    for _ in range(5):
        assert second.tick(clock.advance(1)) == []


def test_one_action_per_loop_when_several_rules_hold(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    items: list[Event] = [
        failed("a", clock.now, n, "E: same", changed_files=[], permission_denials=1)
        for n in (1, 2, 3)
    ]
    out = run_iterations(mon, clock, "a", items)
    assert [a.rule for a in actions(out)] == [Rule.REPEATED_FAILURE]


def test_retry_after_mass_death_restarts_every_dead_loop(store: Store, clock: Clock) -> None:
    mon = make(store, clock, pid_alive=lambda host, pid: False)
    for loop in ("a", "b", "c"):
        mon.handle(heartbeat(loop, clock.now))
    out = mon.tick(clock.advance(0.1))
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert esc.severity == Severity.CRITICAL and "a, b, c" in esc.question
    answer = EscalationAnswered(
        source=OP, escalation_id=esc.escalation_id, answer="", decision=Decision.RETRY, by="me"
    )
    restarts = [e for e in mon.handle(answer) if isinstance(e, LoopStop)]
    assert sorted(e.loop or "" for e in restarts) == ["a", "b", "c"]
    assert all(e.restart for e in restarts)


def test_a_worker_that_does_not_come_back_after_a_restart_is_dead(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    mon.handle(heartbeat("a", clock.now))
    mon.handle(LoopStop(source=OP, loop="a", ts=clock.now, restart=True))
    mon.handle(
        LoopStopped(
            source=WORKER, loop="a", ts=clock.now, status=LoopStatus.STOPPED, reason="restart"
        )
    )
    assert mon.tick(clock.advance(59)) == []
    [act] = actions(mon.tick(clock.advance(2)))
    assert act.rule == Rule.WORKER_DEAD and "not started again" in act.reason
    # It came back: nothing more.
    mon.handle(heartbeat("a", clock.now))
    assert mon.tick(clock.advance(0.5)) == []


def test_paused_or_idle_loops_are_not_judged_on_old_evidence(store: Store, clock: Clock) -> None:
    for status in (LoopStatus.PAUSED, LoopStatus.IDLE):
        mon = make(store, clock)
        loop = f"l-{status.value}"
        out: list[Event] = []
        for n in (1, 2, 3):
            clock.advance(1)
            out += mon.handle(heartbeat(loop, clock.now, status=status))
            # Evidence arriving while the loop says it is paused or idle.
            out += mon.handle(iteration(loop, clock.now, n, changed_files=[]))
            out += mon.tick(clock.now)
        assert actions(out) == []


def test_a_worker_clock_behind_does_not_look_stale(store: Store, clock: Clock) -> None:
    mon = make(store, clock)
    out: list[Event] = []
    for _ in range(10):  # the worker's clock is 30 s behind the monitor's
        out += mon.handle(heartbeat("a", clock.now - timedelta(seconds=30)))
        out += mon.tick(clock.advance(1))
    assert actions(out) == []
    [act] = actions(mon.tick(clock.advance(1.5)))  # and then it stops
    assert act.rule == Rule.STALE_HEARTBEAT


def _incident(store: Store, clock: Clock) -> tuple[Monitor, EscalationRaised]:
    policy = parse_policy(
        {"rules": {"no_changes": {"action": "reset_task", "escalate_after": {"actions": 0}}}}
    )
    mon = make(store, clock, policy=policy)
    items: list[Event] = [iteration("a", clock.now, n, changed_files=[]) for n in (1, 2, 3)]
    [esc] = [e for e in run_iterations(mon, clock, "a", items) if isinstance(e, EscalationRaised)]
    return mon, esc


@pytest.mark.parametrize("decision", [Decision.SKIP, Decision.ABORT])
def test_skip_blocks_the_task_abort_stops_the_loop(
    store: Store, clock: Clock, decision: Decision
) -> None:
    mon, esc = _incident(store, clock)
    answer = EscalationAnswered(
        source=OP, escalation_id=esc.escalation_id, answer="", decision=decision, by="me"
    )
    out = mon.handle(answer)
    if decision == Decision.SKIP:
        [act] = actions(out)
        assert act.action == A.BLOCK_TASK and act.task_id == "T1" and act.loop == "a"
    else:
        [stop] = [e for e in out if isinstance(e, LoopStop)]
        assert stop.loop == "a" and not stop.restart


def test_a_policy_file_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "thresholds: {no_change_iterations: 5}\n"
        "rules:\n  reply_collapse: {enabled: false}\n  no_changes: {action: pause_loop}\n"
    )
    policy = load_policy(path)
    assert policy.thresholds.no_change_iterations == 5
    assert policy.thresholds.repeated_failure_count == 3
    assert not policy.for_rule(Rule.REPLY_COLLAPSE).enabled
    no_changes = policy.for_rule(Rule.NO_CHANGES)
    assert no_changes.action == A.PAUSE_LOOP and no_changes.escalate_after.actions == 2
    assert policy.for_rule(Rule.STALE_HEARTBEAT).action == A.RESTART_WORKER
    path.write_text("rules: [1, 2]\n")
    with pytest.raises(ValidationFailed, match=r"policy\.yaml: rules"):
        load_policy(path)


def test_a_disabled_rule_does_nothing(store: Store, clock: Clock, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  no_changes: {enabled: false}\n")
    mon = make(store, clock, policy=load_policy(path))
    items: list[Event] = [iteration("a", clock.now, n, changed_files=[]) for n in range(1, 6)]
    assert actions(run_iterations(mon, clock, "a", items)) == []


def test_one_crash_is_one_incident_though_heartbeats_were_out_of_phase(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    last = {}
    for loop, phase in (("a", 0.0), ("b", 0.4), ("c", 0.8)):
        last[loop] = clock.now + timedelta(seconds=phase)
    for step in range(9):  # heartbeats every second for a while, out of phase
        t = clock.now + timedelta(seconds=step * 0.1)
        for loop, at in last.items():
            if at <= t:
                mon.handle(heartbeat(loop, at))
                last[loop] = at + timedelta(seconds=1)
    clock.advance(0.8)  # the machine dies here: no more heartbeats
    out: list[Event] = []
    for _ in range(40):
        out += mon.tick(clock.advance(0.1))
    assert not any(isinstance(e, LoopStop) for e in out)
    assert [a.rule for a in actions(out)] == [Rule.MASS_DEATH]
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    assert "a, b, c" in esc.question


def test_late_heartbeats_elsewhere_do_not_make_one_death_a_mass_death(
    store: Store, clock: Clock
) -> None:
    mon = make(store, clock)
    for loop in ("a", "b", "c"):
        mon.handle(heartbeat(loop, clock.now))
    clock.advance(1.0)
    mon.handle(heartbeat("b", clock.now))
    mon.handle(heartbeat("c", clock.now))
    # a is stale; b and c have each missed a heartbeat: hold a's restart a moment.
    assert mon.tick(clock.advance(1.2)) == []
    mon.handle(heartbeat("b", clock.now))  # b was only late
    out = mon.tick(clock.advance(0.1))
    assert [(a.loop, a.rule) for a in actions(out)] == [("a", Rule.STALE_HEARTBEAT)]
