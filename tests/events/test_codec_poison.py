"""Invariant 1 at the decode path: whatever an entry holds, `decode` returns an event
or raises `DecodeError`, never anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given

import events as ev
from events.codec import MAX_DATA_BYTES
from tests.poison import SAMPLES, entries


@given(entries)
def test_decode_raises_only_decode_error_on_any_entry(fields: dict[bytes, bytes]) -> None:
    try:
        event = ev.decode(fields)
    except ev.DecodeError as exc:
        assert exc.raw is fields
    else:
        assert isinstance(event, ev.Event)
        assert json.loads(event.model_dump_json())  # re-encodes: no NaN, no garbage
    ev.entry_type(fields)  # never raises either


@pytest.mark.parametrize(
    "fields",
    [
        {b"type": b"\xff", b"id": b"x", b"data": b"{}"},
        {b"\xff\xfe": b"\xff", b"data": b"\xff"},
        {"data": 7},
        {"data": None},
        {b"data": b"[" * 100_000},
        {b"data": b'{"a": ' * 50_000},
        {b"data": b" " * (MAX_DATA_BYTES + 1)},
    ],
)
def test_hostile_entries_are_decode_errors(fields: dict[object, object]) -> None:
    with pytest.raises(ev.DecodeError):
        ev.decode(fields)
    assert ev.entry_type(fields) in (None, *ev.EVENT_TYPES)


def test_nan_and_infinity_are_refused() -> None:
    finished = SAMPLES[2]
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        data = finished.model_dump_json().replace('"cost_usd":0.25', f'"cost_usd":{literal}')
        assert literal in data
        with pytest.raises(ev.DecodeError, match="cost_usd"):
            ev.decode({"data": data})


def test_a_type_or_id_field_that_disagrees_with_the_data_is_refused() -> None:
    fields = ev.encode(SAMPLES[0])
    with pytest.raises(ev.DecodeError, match="'type'"):
        ev.decode({**fields, "type": "task.passed"})
    with pytest.raises(ev.DecodeError, match="'id'"):
        ev.decode({**fields, "id": "other"})
    assert ev.decode(fields) == SAMPLES[0]
