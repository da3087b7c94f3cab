"""`loops run --trust-agent`'s gate: a claim passes with no criteria, caused by it."""

from __future__ import annotations

from events import Role, Source, TaskClaimed, VerificationPassed
from gates.trust import TrustingGate, trusting_loader
from tests.conftest import RedisBackend


def test_a_claim_is_taken_as_verified_and_nothing_else_is(redis_backend: RedisBackend) -> None:
    bus = redis_backend.bus()
    claim = TaskClaimed(
        source=Source(role=Role.WORKER, instance="w"),
        loop="loop-1",
        task_id="T-1",
        attempt=2,
        commit="a" * 40,
        branch="loop/loop-1",
        claim="<promise>DONE</promise>",
    )
    gate = TrustingGate(bus)
    gate.handle(claim)
    gate.handle(
        VerificationPassed(
            source=claim.source, task_id="T-2", commit="b" * 40, attempt=1, criteria=[]
        )
    )  # not a claim: ignored
    [verdict] = [e for _, e in bus.replay() if isinstance(e, VerificationPassed)]
    assert (verdict.task_id, verdict.commit, verdict.attempt) == ("T-1", "a" * 40, 2)
    assert verdict.loop == "loop-1" and verdict.criteria == []
    assert verdict.source.role is Role.GATE


def test_the_merge_queue_of_trust_runs_only_true(tmp_path: object) -> None:
    [criterion] = trusting_loader(tmp_path, "loop-1", "T-1")  # type: ignore[arg-type]
    assert criterion.check is not None and getattr(criterion.check, "run", None) == "true"
