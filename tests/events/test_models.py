from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import events as ev
from events.catalog import render

SRC = ev.Source(role=ev.Role.WORKER, instance="test:1")


def test_every_event_is_frozen_forbids_extra_and_pins_its_type() -> None:
    for cls in ev.EVENT_CLASSES:
        assert cls.model_config.get("frozen") is True, cls
        assert cls.model_config.get("extra") == "forbid", cls
        etype = cls.model_fields["type"].default
        assert ev.EVENT_TYPES[etype] is cls
        assert cls.__doc__, f"{cls.__name__} needs a docstring (it is the catalog's 'when')"
        assert cls.producers and cls.consumers, cls


def test_catalog_covers_the_issue_list() -> None:
    required = {
        "loop.started",
        "loop.heartbeat",
        "loop.stopped",
        "task.started",
        "iteration.started",
        "iteration.finished",
        "task.claimed",
        "task.passed",
        "task.failed",
        "task.blocked",
        "verification.started",
        "verification.passed",
        "verification.failed",
        "merge.queued",
        "merge.completed",
        "merge.conflicted",
        "monitor.action",
        "escalation.raised",
        "escalation.acknowledged",
        "escalation.answered",
        "loop.pause",
        "loop.resume",
        "loop.stop",
        "task.reset",
        "task.hint",
    }
    assert required <= set(ev.EVENT_TYPES)


def test_roundtrip_bytes_fields() -> None:
    event = ev.IterationFinished(
        source=SRC,
        loop="l1",
        correlation_id="c1",
        task_id="T-1",
        iteration=3,
        attempt=1,
        outcome=ev.IterationOutcome.FAILED,
        failure=ev.FailureKind.USAGE_LIMIT,
        duration_s=1.5,
        changed_files=["a.py"],
        tokens=ev.TokenUsage(input_tokens=10, output_tokens=5),
    )
    fields = {k.encode(): v.encode() for k, v in ev.encode(event).items()}
    assert ev.decode(fields) == event
    assert ev.entry_type(fields) == "iteration.finished"


def test_frozen() -> None:
    event = ev.LoopPause(source=SRC, loop="l1")
    with pytest.raises(ValidationError):
        event.loop = "other"  # type: ignore[misc]


def test_extra_fields_rejected_on_decode() -> None:
    data = json.loads(ev.LoopPause(source=SRC, loop="l1").model_dump_json())
    data["surprise"] = 1
    with pytest.raises(ev.DecodeError) as info:
        ev.decode({"data": json.dumps(data)})
    assert "surprise" in str(info.value)
    assert info.value.raw == {"data": json.dumps(data)}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"data": "not json"},
        {"data": '{"type": "nope"}'},
        {b"data": b"\xff\xfe"},
        {"data": '{"type": "loop.pause"}'},
        {"data": "[]"},
    ],
)
def test_decode_failures_are_project_errors_with_raw(fields: dict[object, object]) -> None:
    with pytest.raises(ev.DecodeError) as info:
        ev.decode(fields)
    assert info.value.raw is fields
    assert isinstance(info.value, ev.LoopsError)


@given(st.dictionaries(st.sampled_from(["data", "type", b"data"]), st.text() | st.binary()))
def test_decode_never_raises_anything_else(fields: dict[object, object]) -> None:
    with contextlib.suppress(ev.DecodeError):
        ev.decode(fields)


def test_caused_links_events_of_one_attempt() -> None:
    claim = ev.TaskClaimed(
        source=SRC,
        loop="l1",
        correlation_id="att-1",
        task_id="T",
        attempt=1,
        commit="abc",
        branch="loop/l1",
    )
    started = ev.VerificationStarted(
        source=ev.Source(role=ev.Role.GATE), task_id="T", commit="abc", attempt=1, **claim.caused()
    )
    assert started.correlation_id == "att-1" and started.causation_id == claim.id
    assert started.loop == "l1"


def test_event_catalog_doc_is_up_to_date() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "EVENT-CATALOG.md"
    assert doc.read_text() == render(), "run `make catalog` to regenerate docs/EVENT-CATALOG.md"
