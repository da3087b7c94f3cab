"""End to end through the bus: claims are verified on clean checkouts and merged by the
queue; main only ever holds commits whose checks ran on the merged tree."""

from __future__ import annotations

import uuid

from events import (
    Decision,
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    MergeCompleted,
    Role,
    Source,
    VerificationFailed,
    VerificationPassed,
    VerificationStarted,
    VerificationVerdict,
)
from tests.gates.conftest import APP, Project

MUL = APP + "\n\ndef mul(a, b):\n    return a * b\n"
SUB = APP + "\n\ndef sub(a, b):\n    return a - b\n"


def answer(project: Project, escalation_id: str, decision: Decision) -> None:
    project.bus.publish(
        EscalationAnswered(
            source=Source(role=Role.OPERATOR, instance="test"),
            escalation_id=escalation_id,
            answer=decision.value,
            decision=decision,
            by="alice",
        )
    )


def test_honest_claim_is_verified_and_merged(project: Project) -> None:
    project.start()
    a = project.loop("a")
    commit = a.write({"app.py": MUL}, "mul")
    claim = a.claim("mul", commit)
    project.pump()

    started = project.events("verification.started")
    assert isinstance(started[0], VerificationStarted) and started[0].commit == commit
    (passed,) = project.events("verification.passed")
    assert isinstance(passed, VerificationPassed)
    assert passed.correlation_id == claim.correlation_id and passed.causation_id == claim.id
    (result,) = passed.criteria
    assert result.passed and result.exit_code == 0 and "1 passed" in result.output_tail
    assert result.duration_s > 0 and result.judged_by == "script"
    assert [e.type for e in project.events(task_id="mul")][-2:] == [
        "merge.queued",
        "merge.completed",
    ]
    (done,) = project.events("merge.completed")
    assert isinstance(done, MergeCompleted) and done.merged_commit == project.main()
    assert "def mul" in project.main_file("app.py")
    project.assert_main_verified()


def test_false_claim_is_rejected_and_the_retry_passes(project: Project) -> None:
    project.start()
    a = project.loop("a")
    lazy = a.write({"NOTES.md": "mul is done, trust me\n"}, "claim without work")
    a.claim("mul", lazy)
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.CHECKS_FAILED
    assert failed.criteria[0].exit_code not in (0, None)
    assert "ImportError" in failed.criteria[0].output_tail
    assert project.events("merge.queued") == []
    seed = project.main()

    fixed = a.write({"app.py": MUL}, "implement mul")
    a.claim("mul", fixed)
    project.pump()
    assert len(project.events("merge.completed")) == 1
    assert project.main() != seed and "def mul" in project.main_file("app.py")
    project.assert_main_verified()


def test_changed_tests_are_flagged_and_merge_only_after_approval(project: Project) -> None:
    project.start()
    a = project.loop("a")
    cheat = "def test_mul():\n    assert True\n"
    commit = a.write({"tests/test_mul.py": cheat, "app.py": MUL}, "mul (and the test)")
    seed = project.main()
    a.claim("mul", commit)
    project.pump()

    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.NEEDS_HUMAN
    assert failed.flagged_files == ["tests/test_mul.py"]
    (raised,) = project.events("escalation.raised")
    assert isinstance(raised, EscalationRaised) and raised.kind == EscalationKind.APPROVAL
    assert raised.escalation_id == failed.escalation_id
    assert project.events("verification.passed") == [] and project.main() == seed

    answer(project, raised.escalation_id, Decision.APPROVE)
    project.pump()
    (passed,) = project.events("verification.passed")
    assert isinstance(passed, VerificationPassed)
    assert passed.flagged_files == ["tests/test_mul.py"]
    assert project.main_file("tests/test_mul.py") == cheat.strip()
    assert len(project.events("escalation.delivered")) == 1
    project.assert_main_verified()


def test_rejected_tampering_never_lands(project: Project) -> None:
    project.start()
    a = project.loop("a")
    commit = a.write({"tasks.json": "{}", "app.py": MUL}, "edit my own spec")
    a.claim("mul", commit)
    project.pump()
    (raised,) = project.events("escalation.raised")
    assert isinstance(raised, EscalationRaised)
    answer(project, raised.escalation_id, Decision.REJECT)
    project.pump()
    verdicts = [e.verdict for e in project.events("verification.failed")]  # type: ignore[attr-defined]
    assert verdicts == [VerificationVerdict.NEEDS_HUMAN, VerificationVerdict.TAMPERED]
    assert project.events("merge.queued") == []
    assert len(git_log(project)) == 1


def test_criteria_come_from_main_not_from_the_claimed_branch(project: Project) -> None:
    project.start(policy="allow")
    a = project.loop("a")
    weaker = '{"a/mul": [{"criterion": "ok", "check": {"type": "script", "run": "true"}}]}'
    commit = a.write({"tasks.json": weaker}, "make my own task pass")
    a.claim("mul", commit)
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.CHECKS_FAILED
    assert failed.flagged_files == ["tasks.json"]
    assert "tests/test_mul.py" in (failed.criteria[0].command or "")
    assert project.events("merge.queued") == []


def test_reject_policy_fails_a_tampered_claim_at_once(project: Project) -> None:
    project.start(policy="reject")
    a = project.loop("a")
    commit = a.write({"tests/test_mul.py": "def test_mul():\n    pass\n"}, "cheat")
    a.claim("mul", commit)
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.TAMPERED
    assert failed.flagged_files == ["tests/test_mul.py"]
    assert project.events("verification.started")  # it looked, then refused
    assert project.events("escalation.raised") == []


def test_a_hanging_check_is_killed_at_its_timeout(project: Project) -> None:
    project.start()
    a = project.loop("a")
    commit = a.write({"x.txt": "x\n"}, "x")
    a.claim("hang", commit)
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    (result,) = failed.criteria
    assert result.timed_out and result.passed is False and result.exit_code is None
    assert result.duration_s < 30
    assert "timeout" in result.output_tail


def test_bad_claims_are_rejected_with_an_event(project: Project) -> None:
    project.start()
    a = project.loop("a")
    commit = a.write({"x.txt": "x\n"}, "x")
    a.claim("mul", "0" * 40)
    a.claim("no-such-task", commit)
    project.bus.client.xadd(f"{project.bus.prefix}:events", {"type": "task.claimed", "data": "{"})
    project.pump()
    failed = project.events("verification.failed")
    assert [f.verdict for f in failed] == [VerificationVerdict.BAD_CLAIM] * 2  # type: ignore[attr-defined]
    assert "unknown commit" in failed[0].reason  # type: ignore[attr-defined]
    assert "unknown task a/no-such-task" in failed[1].reason  # type: ignore[attr-defined]
    assert len(project.bus.dead_letters()) == 1


def test_an_unknown_task_uses_the_configured_default_check(project: Project) -> None:
    project.start(default_check=f"test -f done.txt && echo {uuid.uuid4().hex}")
    a = project.loop("a")
    commit = a.write({"done.txt": "ok\n"}, "done")
    a.claim("anything", commit)
    project.pump()
    assert len(project.events("merge.completed")) == 1
    project.assert_main_verified()


def test_redelivered_claims_and_verdicts_change_nothing(project: Project) -> None:
    project.start()
    a = project.loop("a")
    commit = a.write({"app.py": MUL}, "mul")
    claim = a.claim("mul", commit)
    project.pump()
    assert project.gate is not None and project.merge is not None
    project.gate.handle(claim)  # a redelivery after a crash before the ack
    (passed,) = project.events("verification.passed")
    project.merge.handle(passed)
    main = project.main()
    completed = project.events("merge.completed")
    assert len({e.id for e in completed}) == 1  # republished with the same id: deduped
    assert main == project.main() and len(git_log(project)) == 2


def git_log(project: Project) -> list[str]:
    from infra.git import git

    return git(project.origin, "rev-list", "main").split()
