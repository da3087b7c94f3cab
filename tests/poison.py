"""Hostile stream entries, for the decode path and for consumers on a real bus.

What an agent with bus access (or a bug) can XADD: any bytes in any field or key,
near-valid events with one field replaced by garbage, NaN and Infinity, deep nesting,
huge data, a `type` field that is not UTF-8 or disagrees with the data."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

import events as ev

_SRC = ev.Source(role=ev.Role.WORKER, instance="fuzz")

SAMPLES: list[ev.Event] = [
    ev.TaskHint(source=_SRC, loop="alpha", task_id="T-1", text="hi"),
    ev.TaskPassed(
        source=_SRC, loop="alpha", task_id="T-1", attempt=1, commit="a" * 40, merged_commit="b" * 40
    ),
    ev.IterationFinished(
        source=_SRC,
        loop="alpha",
        task_id="T-1",
        iteration=1,
        attempt=1,
        outcome=ev.IterationOutcome.FAILED,
        duration_s=1.5,
        cost_usd=0.25,
    ),
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)

_RAW_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"[" * 5000, b"\xff", b"{}"]


@st.composite
def near_valid(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A valid event's fields with one thing broken (or not: some stay valid)."""
    event = draw(st.sampled_from(SAMPLES))
    fields = {k.encode(): v.encode() for k, v in ev.encode(event).items()}
    data: dict[str, Any] = json.loads(fields[b"data"])
    how = draw(st.sampled_from(["replace", "raw", "type", "drop", "extra"]))
    key = draw(st.sampled_from(sorted(data)))
    if how == "replace":
        data[key] = draw(json_values)
        fields[b"data"] = json.dumps(data, allow_nan=True).encode()
    elif how == "raw":
        text = json.dumps(data)
        literal = draw(st.sampled_from(_RAW_LITERALS))
        fields[b"data"] = text.replace(json.dumps(data[key]), literal.decode("latin-1"), 1).encode(
            "latin-1"
        )
    elif how == "type":
        fields[b"type"] = draw(
            st.binary(min_size=1, max_size=4)
            | st.sampled_from(list(map(str.encode, ev.EVENT_TYPES)))
        )
    elif how == "drop":
        del data[key]
        fields[b"data"] = json.dumps(data).encode()
    else:
        data[draw(st.text(max_size=8))] = draw(json_values)
        fields[b"data"] = json.dumps(data, allow_nan=True).encode()
    return fields


random_fields = st.dictionaries(
    st.sampled_from([b"type", b"id", b"data"]) | st.binary(min_size=1, max_size=8),
    st.binary(max_size=64),
    min_size=1,
    max_size=4,
)

entries = near_valid() | random_fields
