"""Secrets never reach the stream (invariant 7): `publish` and `publish_many` mask every
secret in any string of an event, whatever field it is in, before it is written."""

from __future__ import annotations

import pytest

from bus import RedisBus
from events import (
    CriterionResult,
    Event,
    Role,
    Source,
    TaskHint,
    VerificationFailed,
    VerificationVerdict,
    decode,
)
from events.secrets import MASK, register_secret

ANTHROPIC = "sk-ant-api03-" + "A1b2C3d4" * 8
GITHUB = "ghp_" + "Z9y8X7w6" * 5
PG = "correct-horse-battery-staple-42"


def failed(tail: str) -> VerificationFailed:
    return VerificationFailed(
        source=Source(role=Role.GATE),
        loop="alpha",
        task_id="T-1",
        commit="0" * 40,
        attempt=1,
        verdict=VerificationVerdict.CHECKS_FAILED,
        reason=f"check printed {GITHUB}",
        criteria=[
            CriterionResult(
                criterion="tests pass",
                kind="script",
                passed=False,
                command="python3 -m pytest",
                exit_code=1,
                output_tail=tail,
            )
        ],
    )


def stored(bus: RedisBus) -> list[bytes]:
    return [fields[b"data"] for _, fields in bus.client.xrange(bus.stream)]  # type: ignore[union-attr]


@pytest.fixture
def pg_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PGPASSWORD", PG)
    return PG


@pytest.mark.usefixtures("pg_password")
@pytest.mark.parametrize("many", [False, True], ids=["publish", "publish_many"])
def test_secrets_in_any_field_are_masked_on_the_stream(bus: RedisBus, many: bool) -> None:
    tail = f'env:\nANTHROPIC_API_KEY={ANTHROPIC}\nPGPASSWORD={PG}\nquote: "{PG}"\n'
    event = failed(tail)
    if many:
        bus.publish_many([event, event])
    else:
        bus.publish(event)
    for data in stored(bus):
        for secret in (ANTHROPIC, GITHUB, PG):
            assert secret.encode() not in data
        assert MASK.encode() in data
        back = decode({"data": data})  # still a valid event, same id
        assert isinstance(back, VerificationFailed) and back.id == event.id
        assert back.criteria[0].output_tail.count(MASK) == 3
        assert back.reason == f"check printed {MASK}"


def test_a_registered_secret_is_masked_too(bus: RedisBus) -> None:
    token = "dashboard-token-" + "q" * 20
    register_secret(token)
    bus.publish(TaskHint(source=Source(role=Role.OPERATOR), loop="a", task_id="T", text=token))
    assert token.encode() not in stored(bus)[0]


def test_an_event_without_secrets_is_written_as_it_is(bus: RedisBus) -> None:
    event: Event = failed("1 failed, 3 passed in 0.2s")
    event = event.model_copy(update={"reason": "assertion failed"})
    bus.publish(event)
    assert stored(bus) == [event.model_dump_json().encode()]


@pytest.mark.parametrize(
    "sample",
    [
        ANTHROPIC,
        "sk-proj-" + "a1B2" * 6,
        GITHUB,
        "github_pat_" + "A1b2" * 6,
        "glpat-" + "x9Y8" * 6,
        "xoxb-" + "1234567890-abc",
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJl",
        "Authorization: Bearer abcdefghijklmnop",
        "x-api-key: abcdefghij",
        "postgres://user:hunter22@db/x",
    ],
)
def test_the_quick_check_sees_every_token_shape(sample: str) -> None:
    """`contains_secret` (what publish runs on every event) skips the token regex unless
    a literal of some shape is present: every shape must have one."""
    from events.secrets import contains_secret, redact

    text = f"output: {sample} end"
    assert redact(text) != text
    assert contains_secret(text) and contains_secret(text, json_escaped=True)
