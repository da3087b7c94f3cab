"""A small, realistic history of a running system for the operator's commands."""

from __future__ import annotations

import events as ev

W = ev.Source(role=ev.Role.WORKER, instance="worker-host:101")
GATE = ev.Source(role=ev.Role.GATE, instance="gate-host:102")
MERGE = ev.Source(role=ev.Role.MERGE, instance="merge-host:103")
MON = ev.Source(role=ev.Role.MONITOR, instance="monitor-host:104")


def heartbeat(loop: str, **kw: object) -> ev.LoopHeartbeat:
    fields: dict[str, object] = {
        "status": ev.LoopStatus.RUNNING,
        "pid": 101,
        "host": "worker-host",
        "interval_s": 30.0,
    }
    fields.update(kw)
    return ev.LoopHeartbeat(source=W, loop=loop, **fields)  # type: ignore[arg-type]


def criterion(text: str, passed: bool, output: str) -> ev.CriterionResult:
    return ev.CriterionResult(
        criterion=text,
        kind="script",
        passed=passed,
        command="pytest -q tests/test_api.py",
        exit_code=0 if passed else 1,
        duration_s=1.2,
        output_tail=output,
        judged_by="script",
    )


def raised(
    escalation_id: str, loop: str = "loop-api", task_id: str = "API-2"
) -> ev.EscalationRaised:
    return ev.EscalationRaised(
        source=W,
        loop=loop,
        escalation_id=escalation_id,
        kind=ev.EscalationKind.QUESTION,
        severity=ev.Severity.HIGH,
        question="Should the API return 404 or 410 for deleted items?",
        task_id=task_id,
        options=["404", "410"],
    )


def scenario() -> list[ev.Event]:
    """Two loops: loop-api merged API-1, is blocked on a question for API-2; loop-ui has
    UI-1 verified and queued for merge, UI-2 failed its checks once."""
    return [
        ev.LoopStarted(
            source=W, loop="loop-api", agent="claude", pid=101, host="worker-host", tasks_total=3
        ),
        ev.LoopStarted(
            source=W,
            loop="loop-ui",
            agent="script:demo.yaml",
            pid=102,
            host="worker-host",
            tasks_total=2,
        ),
        ev.TaskStarted(source=W, loop="loop-api", task_id="API-1", attempt=1),
        ev.IterationStarted(
            source=W,
            loop="loop-api",
            task_id="API-1",
            iteration=1,
            attempt=1,
            agent="claude",
            prompt_bytes=2048,
        ),
        ev.IterationFinished(
            source=W,
            loop="loop-api",
            task_id="API-1",
            iteration=1,
            attempt=1,
            outcome=ev.IterationOutcome.CLAIMED,
            duration_s=42.0,
            changed_files=["api/items.py"],
            tokens=ev.TokenUsage(input_tokens=12000, output_tokens=3000),
            cost_usd=0.42,
        ),
        ev.TaskClaimed(
            source=W,
            loop="loop-api",
            task_id="API-1",
            attempt=1,
            commit="a1b2c3d4e5",
            branch="loop/loop-api",
        ),
        ev.VerificationStarted(
            source=GATE, loop="loop-api", task_id="API-1", commit="a1b2c3d4e5", attempt=1
        ),
        ev.VerificationPassed(
            source=GATE,
            loop="loop-api",
            task_id="API-1",
            commit="a1b2c3d4e5",
            attempt=1,
            criteria=[criterion("GET /items returns 200", True, "3 passed in 0.4s")],
        ),
        ev.MergeQueued(
            source=MERGE, loop="loop-api", task_id="API-1", commit="a1b2c3d4e5", position=0
        ),
        ev.MergeCompleted(
            source=MERGE,
            loop="loop-api",
            task_id="API-1",
            commit="a1b2c3d4e5",
            merged_commit="f00dfeed",
            main_before="0ld",
            receipt=ev.Receipt(
                task_id="API-1",
                commit="a1b2c3d4e5",
                agent_calls=1,
                tokens=ev.TokenUsage(input_tokens=12000, output_tokens=3000),
                cost_usd=0.42,
                wall_time_s=42.0,
                verification_runs=1,
                attempts=1,
            ),
        ),
        ev.TaskPassed(
            source=W,
            loop="loop-api",
            task_id="API-1",
            attempt=1,
            commit="a1b2c3d4e5",
            merged_commit="f00dfeed",
        ),
        ev.TaskStarted(source=W, loop="loop-api", task_id="API-2", attempt=1),
        ev.TaskBlocked(
            source=W,
            loop="loop-api",
            task_id="API-2",
            reason="waiting on a person",
            waiting_on_human=True,
        ),
        raised("e-1a2b3c"),
        heartbeat(
            "loop-api",
            status=ev.LoopStatus.WAITING,
            task_id="API-2",
            iteration=1,
            passed=1,
            total=3,
        ),
        ev.TaskStarted(source=W, loop="loop-ui", task_id="UI-2", attempt=1),
        ev.VerificationFailed(
            source=GATE,
            loop="loop-ui",
            task_id="UI-2",
            commit="bbbb1111",
            attempt=1,
            verdict=ev.VerificationVerdict.CHECKS_FAILED,
            reason="1 of 2 criteria failed",
            criteria=[
                criterion("renders the list", True, "ok"),
                criterion(
                    "<script>alert('x')</script> is escaped", False, "AssertionError: <b>boom</b>"
                ),
            ],
        ),
        ev.TaskFailed(
            source=W, loop="loop-ui", task_id="UI-2", attempt=1, reason="verification failed"
        ),
        ev.MonitorAction(
            source=MON,
            loop="loop-ui",
            action=ev.MonitorActionKind.RESET_TASK,
            rule="same_failure",
            reason="same failure 3 times",
            incident_id="inc-1",
            task_id="UI-2",
            hint="the escaping test fails: use textContent",
        ),
        ev.TaskStarted(source=W, loop="loop-ui", task_id="UI-1", attempt=1),
        ev.VerificationPassed(
            source=GATE,
            loop="loop-ui",
            task_id="UI-1",
            commit="cccc2222",
            attempt=1,
            criteria=[criterion("builds", True, "built")],
        ),
        ev.MergeQueued(source=MERGE, loop="loop-ui", task_id="UI-1", commit="cccc2222", position=0),
        heartbeat("loop-ui", task_id="UI-1", iteration=3, passed=0, total=2),
    ]
