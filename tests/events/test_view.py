"""The fold of events into the operator's view: pure, no Redis, time passed in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import events as ev
from events.view import (
    EscalationStatus,
    Health,
    MergeStatus,
    SystemView,
    TaskStatus,
    clean,
    event_fields,
    event_line,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
W = ev.Source(role=ev.Role.WORKER, instance="w:1")
GATE = ev.Source(role=ev.Role.GATE, instance="g:1")
MERGE = ev.Source(role=ev.Role.MERGE, instance="m:1")
OP = ev.Source(role=ev.Role.OPERATOR, instance="op:1")
MON = ev.Source(role=ev.Role.MONITOR, instance="mon:1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def heartbeat(loop: str, t: float, **kw: object) -> ev.LoopHeartbeat:
    fields: dict[str, object] = {
        "status": ev.LoopStatus.RUNNING,
        "pid": 1,
        "host": "h",
        "interval_s": 10.0,
    }
    fields.update(kw)
    return ev.LoopHeartbeat(source=W, loop=loop, ts=at(t), **fields)  # type: ignore[arg-type]


def criterion(passed: bool) -> ev.CriterionResult:
    return ev.CriterionResult(
        criterion="tests pass",
        kind="script",
        passed=passed,
        command="pytest -q",
        exit_code=0 if passed else 1,
        output_tail="1 passed" if passed else "1 failed",
    )


def a_task_lifecycle() -> list[ev.Event]:
    return [
        ev.LoopStarted(
            source=W, loop="l1", ts=at(0), agent="claude", pid=1, host="h", tasks_total=2
        ),
        ev.TaskStarted(source=W, loop="l1", ts=at(1), task_id="T1", attempt=1),
        ev.IterationStarted(
            source=W,
            loop="l1",
            ts=at(2),
            task_id="T1",
            iteration=1,
            attempt=1,
            agent="claude",
            prompt_bytes=10,
        ),
        ev.IterationFinished(
            source=W,
            loop="l1",
            ts=at(3),
            task_id="T1",
            iteration=1,
            attempt=1,
            outcome=ev.IterationOutcome.CONTINUE,
            duration_s=1.0,
            tokens=ev.TokenUsage(input_tokens=100, output_tokens=20),
            cost_usd=0.25,
        ),
        ev.IterationFinished(
            source=W,
            loop="l1",
            ts=at(4),
            task_id="T1",
            iteration=2,
            attempt=1,
            outcome=ev.IterationOutcome.CLAIMED,
            duration_s=1.0,
            tokens=ev.TokenUsage(input_tokens=50, output_tokens=5, cache_read_tokens=1000),
            cost_usd=0.5,
        ),
        ev.TaskClaimed(
            source=W, loop="l1", ts=at(5), task_id="T1", attempt=1, commit="c1", branch="loop/l1"
        ),
    ]


def test_a_task_goes_from_running_to_claimed_and_costs_add_up() -> None:
    view = SystemView.from_events(a_task_lifecycle())
    loop = view.loops["l1"]
    task = loop.tasks["T1"]
    assert task.status is TaskStatus.CLAIMED
    assert task.commit == "c1"
    assert task.iterations == 2
    assert loop.tokens.total == 1175 == view.tokens
    assert loop.cost_usd == 0.75 == view.cost_usd
    assert loop.agent == "claude" and loop.total == 2 and loop.iteration == 2


def test_verification_evidence_and_merge_make_the_task_passed() -> None:
    view = SystemView.from_events(a_task_lifecycle())
    view.apply(
        ev.VerificationStarted(
            source=GATE, loop="l1", ts=at(6), task_id="T1", commit="c1", attempt=1
        )
    )
    assert view.loops["l1"].tasks["T1"].status is TaskStatus.VERIFYING
    view.apply(
        ev.VerificationFailed(
            source=GATE,
            loop="l1",
            ts=at(7),
            task_id="T1",
            commit="c1",
            attempt=1,
            verdict=ev.VerificationVerdict.CHECKS_FAILED,
            reason="1 of 1 criteria failed",
            criteria=[criterion(False)],
        )
    )
    task = view.loops["l1"].tasks["T1"]
    assert task.status is TaskStatus.FAILED
    assert task.verification is not None and task.verification.passed is False
    assert task.verification.criteria[0].output_tail == "1 failed"

    view.apply(ev.TaskStarted(source=W, loop="l1", ts=at(8), task_id="T1", attempt=2))
    view.apply(
        ev.TaskClaimed(
            source=W, loop="l1", ts=at(9), task_id="T1", attempt=2, commit="c2", branch="b"
        )
    )
    view.apply(
        ev.VerificationPassed(
            source=GATE,
            loop="l1",
            ts=at(10),
            task_id="T1",
            commit="c2",
            attempt=2,
            criteria=[criterion(True)],
        )
    )
    assert task.status is TaskStatus.VERIFIED
    assert task.verification is not None and task.verification.passed is True
    assert task.attempts == 1  # failed attempts, as in test-state.json: attempt 1 failed

    view.apply(
        ev.MergeQueued(source=MERGE, loop="l1", ts=at(11), task_id="T1", commit="c2", position=0)
    )
    assert task.status is TaskStatus.QUEUED
    assert [(m.task_id, m.status) for m in view.merge_queue()] == [("T1", MergeStatus.MERGING)]
    view.apply(
        ev.MergeCompleted(
            source=MERGE,
            loop="l1",
            ts=at(12),
            task_id="T1",
            commit="c2",
            merged_commit="m2",
            main_before="m1",
        )
    )
    view.apply(
        ev.TaskPassed(
            source=W, loop="l1", ts=at(13), task_id="T1", attempt=2, commit="c2", merged_commit="m2"
        )
    )
    assert task.status is TaskStatus.MERGED
    assert view.merge_queue() == []
    assert view.merges[0].status is MergeStatus.MERGED and view.merges[0].merged_commit == "m2"
    assert view.loops["l1"].passed == 1


def test_merge_queue_head_is_merging_and_conflicts_leave_the_queue() -> None:
    view = SystemView()
    view.apply(
        ev.MergeQueued(source=MERGE, loop="a", ts=at(1), task_id="T1", commit="c1", position=0)
    )
    view.apply(
        ev.MergeQueued(source=MERGE, loop="b", ts=at(2), task_id="T2", commit="c2", position=1)
    )
    assert [m.status for m in view.merge_queue()] == [MergeStatus.MERGING, MergeStatus.QUEUED]
    view.apply(
        ev.MergeConflicted(
            source=MERGE, loop="a", ts=at(3), task_id="T1", commit="c1", files=["x.py"], tries=1
        )
    )
    assert [(m.task_id, m.status) for m in view.merge_queue()] == [("T2", MergeStatus.MERGING)]
    assert view.loops["a"].tasks["T1"].status is TaskStatus.FAILED
    assert "x.py" in view.loops["a"].tasks["T1"].reason


def test_health_by_heartbeat_age_against_interval() -> None:
    view = SystemView.from_events([heartbeat("l1", 0)])
    loop = view.loops["l1"]
    assert view.refresh(at(15)).loops["l1"].health is Health.HEALTHY
    assert view.refresh(at(25)).loops["l1"].health is Health.STALE
    assert view.refresh(at(51)).loops["l1"].health is Health.DEAD
    view.apply(heartbeat("l1", 50, status=ev.LoopStatus.WAITING, waiting_until=at(3600)))
    view.refresh(at(51))
    assert loop.health is Health.HEALTHY and loop.status is ev.LoopStatus.WAITING
    view.apply(
        ev.LoopStopped(source=W, loop="l1", ts=at(60), status=ev.LoopStatus.ERROR, reason="boom")
    )
    assert view.refresh(at(61)).loops["l1"].health is Health.DEAD
    view.apply(
        ev.LoopStopped(source=W, loop="l1", ts=at(70), status=ev.LoopStatus.STOPPED, reason="done")
    )
    assert view.refresh(at(9999)).loops["l1"].health is Health.STOPPED
    assert SystemView().loop("new").judge(at(0)) is Health.UNKNOWN


def test_heartbeat_carries_status_task_and_progress() -> None:
    view = SystemView.from_events(
        [
            heartbeat(
                "l1", 0, status=ev.LoopStatus.PAUSED, task_id="T3", iteration=4, passed=2, total=5
            )
        ]
    )
    loop = view.loops["l1"]
    assert (loop.status, loop.task_id, loop.iteration, loop.passed, loop.total) == (
        ev.LoopStatus.PAUSED,
        "T3",
        4,
        2,
        5,
    )


def test_escalation_lifecycle() -> None:
    raised = ev.EscalationRaised(
        source=W,
        loop="l1",
        ts=at(1),
        escalation_id="e-1",
        kind=ev.EscalationKind.QUESTION,
        severity=ev.Severity.HIGH,
        question="Which DB?",
        task_id="T1",
        options=["sqlite", "postgres"],
    )
    view = SystemView.from_events([raised])
    esc = view.escalations["e-1"]
    assert esc.status is EscalationStatus.OPEN and esc.options == ["sqlite", "postgres"]
    assert view.open_escalations() == [esc]
    view.apply(ev.EscalationAcknowledged(source=OP, ts=at(2), escalation_id="e-1", by="ann"))
    assert esc.status is EscalationStatus.ACKNOWLEDGED
    view.apply(ev.EscalationRaised(**{**raised.model_dump(), "id": ev.new_id(), "repeat": 1}))
    assert esc.status is EscalationStatus.ACKNOWLEDGED and esc.repeat == 1
    view.apply(
        ev.EscalationAnswered(source=OP, ts=at(3), escalation_id="e-1", answer="sqlite", by="ann")
    )
    assert esc.status is EscalationStatus.ANSWERED and esc.answer == "sqlite"
    assert view.open_escalations() == []
    # A late second answer does not overwrite the first.
    view.apply(
        ev.EscalationAnswered(source=OP, ts=at(4), escalation_id="e-1", answer="pg", by="bob")
    )
    assert esc.answer == "sqlite"
    view.apply(ev.EscalationDelivered(source=W, ts=at(5), escalation_id="e-1"))
    assert esc.status is EscalationStatus.DELIVERED
    view.apply(
        ev.EscalationRaised(**{**raised.model_dump(), "id": ev.new_id(), "escalation_id": "e-2"})
    )
    view.apply(ev.EscalationExpired(source=W, ts=at(6), escalation_id="e-2", reason="task passed"))
    assert view.escalations["e-2"].status is EscalationStatus.EXPIRED


def test_acknowledged_commands_change_the_view() -> None:
    view = SystemView.from_events([*a_task_lifecycle(), heartbeat("l1", 6)])
    pause = ev.LoopPause(source=OP, loop="l1", ts=at(7))
    view.apply(pause)
    assert view.loops["l1"].status is ev.LoopStatus.RUNNING  # not until the worker says so
    view.apply(
        ev.CommandAcknowledged(
            source=W, loop="l1", ts=at(8), command="loop.pause", command_id=pause.id
        )
    )
    assert view.loops["l1"].status is ev.LoopStatus.PAUSED
    assert view.commands[-1].acknowledged
    reset = ev.TaskReset(source=OP, loop="l1", ts=at(9), task_id="T1", hint="try again")
    view.apply(reset)
    view.apply(
        ev.CommandAcknowledged(
            source=W, loop="l1", ts=at(10), command="task.reset", command_id=reset.id
        )
    )
    task = view.loops["l1"].tasks["T1"]
    assert task.status is TaskStatus.PENDING and task.attempts == 0


def test_blocked_held_released_and_monitor_actions() -> None:
    view = SystemView.from_events(
        [
            ev.TaskBlocked(source=W, loop="l1", ts=at(1), task_id="T1", reason="max attempts"),
            ev.TaskHeld(source=W, loop="l1", ts=at(2), task_id="T2", reason="overlap"),
            ev.MonitorAction(
                source=MON,
                loop="l1",
                ts=at(3),
                action=ev.MonitorActionKind.RESET_TASK,
                rule="same_failure",
                reason="same error 3 times",
                incident_id="i1",
                task_id="T1",
                hint="look at x",
            ),
        ]
    )
    assert view.loops["l1"].tasks["T1"].status is TaskStatus.BLOCKED
    assert view.loops["l1"].tasks["T2"].status is TaskStatus.HELD
    view.apply(ev.TaskReleased(source=W, loop="l1", ts=at(4), task_id="T2", reason="merged"))
    assert view.loops["l1"].tasks["T2"].status is TaskStatus.PENDING
    assert view.monitor_actions[0].hint == "look at x"


def test_duplicates_are_ignored() -> None:
    events = a_task_lifecycle()
    once = SystemView.from_events(events)
    twice = SystemView.from_events([*events, *events])
    assert once.to_dict(at(10)) == twice.to_dict(at(10))
    assert twice.events_seen == len(events)


def test_json_is_serialisable_and_has_totals() -> None:
    view = SystemView.from_events([("1-0", e) for e in a_task_lifecycle()])
    data = json.loads(view.to_json(now=at(10)))
    assert data["loops"]["l1"]["tasks"]["T1"]["status"] == "claimed"
    assert data["loops"]["l1"]["health"] == "healthy"
    assert data["totals"]["tokens"] == 1175
    assert data["totals"]["cost_usd"] == 0.75
    assert data["last_stream_id"] == "1-0"
    assert "seen" not in data
    assert len(data["recent"]) == len(a_task_lifecycle())


def test_event_line_and_fields() -> None:
    event = ev.TaskFailed(
        source=W, loop="l1", ts=at(0), task_id="T1", attempt=2, reason="checks failed"
    )
    assert event_fields(event) == 'task_id=T1 attempt=2 reason="checks failed"'
    line = event_line(event)
    assert line.endswith(' l1 task.failed task_id=T1 attempt=2 reason="checks failed"')
    assert len(line.split(" ")[0]) == 8


def test_terminal_text_is_escaped_and_cut() -> None:
    assert clean("a\x1b[31mred\nb") == "a\\x1b[31mred\\nb"
    assert len(clean("x" * 500)) == 120
    event = ev.TaskBlocked(source=W, loop="l\x1b]0;x", ts=at(0), task_id="T", reason="\x07bell")
    assert "\x1b" not in event_line(event) and "\x07" not in event_line(event)


def test_an_unreadable_answer_reopens_the_question_and_a_read_one_completes_it() -> None:
    human = ev.Source(role=ev.Role.HUMAN, instance="h:1")
    raised = ev.EscalationRaised(
        source=GATE,
        loop="l1",
        ts=at(1),
        escalation_id="e-1",
        kind=ev.EscalationKind.SIGNOFF,
        severity=ev.Severity.MEDIUM,
        question="Sign off T1?",
        task_id="T1",
        options=["approve", "reject"],
    )
    view = SystemView.from_events([raised])
    esc = view.escalations["e-1"]
    first = ev.EscalationAnswered(
        source=OP, ts=at(2), escalation_id="e-1", answer="hmm, maybe", by="ann"
    )
    view.apply(first)
    assert esc.status is EscalationStatus.ANSWERED and esc.decision is None
    view.apply(
        ev.EscalationRaised(
            **{**raised.model_dump(), "id": ev.new_id(), "repeat": 1, "reopens": first.id}
        )
    )
    assert esc.status is EscalationStatus.OPEN and esc.answer is None
    assert view.open_escalations() == [esc]  # `loops answer` takes the next answer
    second = ev.EscalationAnswered(
        source=OP, ts=at(3), escalation_id="e-1", answer="Looks right to me", by="ann"
    )
    view.apply(second)
    view.apply(
        ev.EscalationAnswered(
            source=human,
            ts=at(4),
            escalation_id="e-1",
            answer="Looks right to me",
            by="ann",
            decision=ev.Decision.APPROVE,
            interprets=second.id,
            read_by="rules",
        )
    )
    assert esc.status is EscalationStatus.ANSWERED and esc.decision is ev.Decision.APPROVE


def test_status_says_when_the_usage_window_resets() -> None:
    from cli.fmt import render

    reset = at(600)
    hhmm = reset.astimezone().strftime("%H:%M")
    view = SystemView.from_events(
        [heartbeat("l1", 0, status=ev.LoopStatus.WAITING, task_id="T1", waiting_until=reset)]
    )
    assert f"waiting for usage reset at {hhmm}, 9m left" in render(view, now=at(60))
    # An outage back-off is not a usage window.
    outage = ev.IterationFinished(
        source=W,
        loop="l1",
        ts=at(61),
        task_id="T1",
        iteration=1,
        attempt=1,
        outcome=ev.IterationOutcome.FAILED,
        failure=ev.FailureKind.OUTAGE,
        duration_s=1.0,
        retry_at=at(90),
        counted=False,
    )
    view = SystemView.from_events(
        [outage, heartbeat("l1", 62, status=ev.LoopStatus.WAITING, waiting_until=at(90))]
    )
    text = render(view, now=at(62))
    assert "API outage, retry at" in text and "usage reset" not in text


def flaky(t: float, command: str, count: int, tree: str, **kw: object) -> ev.CheckFlaky:
    return ev.CheckFlaky(
        source=MERGE,
        ts=at(t),
        criterion=f"{command} passes",
        command=command,
        tree=tree,
        task_ids=["l1/T1", "l2/T2"],
        count=count,
        **kw,  # type: ignore[arg-type]
    )


def test_flaky_checks_are_counted_per_check_in_the_view_status_and_totals() -> None:
    from cli.fmt import render

    first = flaky(1, "pytest -q tests/net", 1, "a" * 40)
    events = [
        heartbeat("l1", 0),
        first,
        first,  # redelivered: not another flake
        flaky(2, "pytest -q tests/net", 2, "b" * 40, blocked=True),
        flaky(3, "make lint", 1, "c" * 40),
        flaky(4, "pytest -q tests/net", 3, "d" * 40, escalation_id="e-abc123"),
    ]
    view = SystemView.from_events(events)
    net, lint = view.flaky["pytest -q tests/net"], view.flaky["make lint"]
    assert (net.count, net.seen, net.escalation_id) == (3, 3, "e-abc123")
    assert (lint.count, lint.seen, lint.blocked) == (1, 1, False)
    assert view.to_dict(now=at(5))["totals"]["flaky_checks"] == 4

    text = render(view, now=at(5))
    section = text.split("FLAKY CHECKS (2)", 1)[1]
    rows = [ln.split() for ln in section.splitlines()[2:4]]
    assert rows[0][:4] == ["3", "3", "landed", "e-abc123"] and rows[0][-3:] == [
        "pytest",
        "-q",
        "tests/net",
    ]
    assert rows[1][:4] == ["1", "1", "landed", "-"] and rows[1][-2:] == ["make", "lint"]
    assert "FLAKY CHECKS" not in render(SystemView.from_events(events[:1]), now=at(5))
