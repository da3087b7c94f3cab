"""Forged decisions are dropped, even by someone with bus access (invariant 8).

A forger is a plain redis client that XADDs entries of its own: unsigned, signed with
a wrong key, or a signed entry with one field changed. Consumers of a bus with the
key dead-letter them and never call the handler; `replay` and `tail` skip them. The
same events published through the bus (signed) are handled. Every test runs on
in-process fakeredis and on the real Redis."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from bus import RedisBus, signing
from events import (
    EVENT_TYPES,
    CriterionResult,
    Decision,
    EscalationAnswered,
    Event,
    LoopHeartbeat,
    LoopStatus,
    Role,
    Source,
    VerificationPassed,
    encode,
)
from tests.conftest import RedisBackend

KEY = secrets.token_bytes(32)


def passed() -> VerificationPassed:
    return VerificationPassed(
        source=Source(role=Role.GATE),
        loop="alpha",
        task_id="T-1",
        commit="0" * 40,
        attempt=1,
        criteria=[],  # what the agent of issue 9 sent: no criteria at all
    )


def answered() -> EscalationAnswered:
    return EscalationAnswered(
        source=Source(role=Role.OPERATOR),
        loop="alpha",
        escalation_id="e-123456",
        answer="approve",
        decision=Decision.APPROVE,
        by="someone",
        task_id="T-1",
    )


def forge(bus: RedisBus, event: Event, **extra: Any) -> str:
    """XADD `event` with a plain client, as someone with the password would."""
    fields: dict[str, Any] = {**encode(event), **extra}
    return bus.client.xadd(bus.stream, fields).decode()  # type: ignore[union-attr]


@pytest.fixture
def signed(redis_backend: RedisBackend) -> RedisBus:
    return redis_backend.bus(signing_key=KEY)


def handled_by(bus: RedisBus, group: str = "merge") -> list[Event]:
    got: list[Event] = []
    bus.subscribe(group, "c", got.append).drain()
    return got


def test_every_event_type_is_either_a_decision_or_a_report() -> None:
    assert set(EVENT_TYPES) == signing.DECISION_TYPES | signing.REPORT_TYPES
    assert not signing.DECISION_TYPES & signing.REPORT_TYPES
    wanted = {
        "verification.passed",
        "verification.failed",
        "merge.completed",
        "escalation.answered",
        "task.reset",
        "task.passed",
        "loop.pause",
        "loop.resume",
        "loop.stop",
        "task.hint",
        "task.held",
        "task.released",
    }
    assert wanted <= signing.DECISION_TYPES


@pytest.mark.parametrize("make", [passed, answered], ids=["verification.passed", "answered"])
def test_a_forged_decision_is_dead_lettered_and_never_handled(signed: RedisBus, make: Any) -> None:
    forged = make()
    entry = forge(signed, forged)
    assert handled_by(signed) == []
    dead = signed.dead_letters()
    assert [(d.entry_id, d.reason.split(":")[0]) for d in dead] == [(entry, signing.UNSIGNED)]
    assert forged.id in dead[0].reason
    # the same event, published by a role that holds the key, is handled
    genuine = make()
    signed.publish(genuine)
    assert [e.id for e in handled_by(signed, "gate")] == [genuine.id]


def test_a_wrong_key_or_a_field_changed_after_signing_is_a_bad_signature(
    signed: RedisBus,
) -> None:
    event = passed()
    data = encode(event)["data"].encode()
    forge(signed, event, sig=signing.sign(secrets.token_bytes(32), data))
    # a genuine signature over other bytes: the criteria emptied after signing
    genuine = json.loads(data)
    genuine["criteria"] = [
        CriterionResult(criterion="x", kind="script", passed=True).model_dump(mode="json")
    ]
    good_sig = signing.sign(KEY, json.dumps(genuine).encode())
    forge(signed, event, sig=good_sig)
    assert handled_by(signed) == []
    assert [d.reason.split(":")[0] for d in signed.dead_letters()] == [
        signing.BAD_SIGNATURE,
        signing.BAD_SIGNATURE,
    ]


def test_a_forged_decision_is_recorded_once_whatever_the_number_of_groups(
    signed: RedisBus,
) -> None:
    forge(signed, answered())
    for group in ("worker:alpha", "human", "monitor"):
        assert handled_by(signed, group) == []
    assert len(signed.dead_letters()) == 1


def test_reports_are_signed_but_not_checked(signed: RedisBus) -> None:
    beat = LoopHeartbeat(
        source=Source(role=Role.WORKER),
        loop="alpha",
        status=LoopStatus.RUNNING,
        pid=1,
        host="h",
        interval_s=5.0,
    )
    forge(signed, beat)  # unsigned: a report, handled (the gate re-verifies claims)
    assert [e.id for e in handled_by(signed)] == [beat.id]
    signed.publish(passed())
    _, fields = signed.client.xrange(signed.stream)[-1]  # type: ignore[index]
    assert fields[b"sig"] == signing.sign(KEY, fields[b"data"])


def test_views_never_show_a_forged_decision(signed: RedisBus) -> None:
    forge(signed, passed())
    genuine = passed()
    signed.publish(genuine)
    assert [e.id for _, e in signed.replay()] == [genuine.id]
    assert [e.id for _, e in signed.tail("0-0", block_ms=0)] == [genuine.id]


def test_a_bus_without_a_key_checks_nothing(redis_backend: RedisBackend) -> None:
    bare = redis_backend.bus()
    forged = passed()
    forge(bare, forged)
    assert [e.id for e in handled_by(bare)] == [forged.id]
    _, fields = bare.client.xrange(bare.stream)[-1]  # type: ignore[index]
    assert b"sig" not in fields
