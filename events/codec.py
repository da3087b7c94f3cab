"""The discriminated union of all events and their wire format on a Redis stream.

A stream entry has three fields: `type` and `id` (readable without decoding, for
filtering and dedupe) and `data`, the event as JSON. `decode` accepts the fields
as redis-py returns them (bytes or str keys and values)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError

from events import models as m
from events.envelope import Event
from events.errors import DecodeError

AnyEvent = Annotated[
    Union[  # noqa: UP007 - the discriminated union reads better spelled out
        m.LoopStarted,
        m.LoopHeartbeat,
        m.LoopStopped,
        m.TaskStarted,
        m.IterationStarted,
        m.IterationFinished,
        m.UsageLimited,
        m.BudgetWarned,
        m.BudgetExhausted,
        m.BudgetRaised,
        m.TaskClaimed,
        m.TaskPassed,
        m.TaskFailed,
        m.TaskBlocked,
        m.TaskHeld,
        m.TaskReleased,
        m.StateRejected,
        m.VerificationStarted,
        m.VerificationPassed,
        m.VerificationFailed,
        m.MergeQueued,
        m.MergeCompleted,
        m.MergeConflicted,
        m.CheckFlaky,
        m.MonitorAction,
        m.ProgressReported,
        m.EscalationRaised,
        m.EscalationAcknowledged,
        m.EscalationAnswered,
        m.EscalationDelivered,
        m.EscalationExpired,
        m.LoopPause,
        m.LoopResume,
        m.LoopStop,
        m.TaskReset,
        m.TaskHint,
        m.IterationAbort,
        m.CommandAcknowledged,
    ],
    Field(discriminator="type"),
]

EVENT_CLASSES: tuple[type[Event], ...] = get_args(get_args(AnyEvent)[0])
EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls for cls in EVENT_CLASSES
}
_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)


MAX_DATA_BYTES = 8 * 1024 * 1024
"""An entry whose `data` is larger is not an event of ours (the largest, an
`iteration.finished` or a verdict with its capped output tails, is far below it)."""


def encode(event: Event) -> dict[str, str]:
    """The stream fields for `event`."""
    return {"type": event.type, "id": event.id, "data": event.model_dump_json()}


def _text(value: Any) -> str | None:
    """`value` as text: None when it is neither str nor UTF-8 bytes."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value


def decode(fields: Mapping[Any, Any]) -> Event:
    """The event held in a stream entry's fields; `DecodeError` (with the raw fields)
    when the entry is not a valid event of a known type.

    Whatever the entry holds (bytes that are not UTF-8 in any key or value, wrong
    types, a huge or deeply nested `data`, NaN or Infinity, unknown fields or type, a
    `type`/`id` field that disagrees with `data`), the only error raised is
    `DecodeError`: a consumer dead-letters it and goes on (invariant 1)."""
    if not isinstance(fields, Mapping):
        raise DecodeError(f"entry is a {type(fields).__name__}, not a mapping", raw=None)
    try:
        data = _field(fields, "data")
    except Exception as exc:  # an unhashable or odd key type: not an entry of ours
        raise DecodeError(f"unreadable entry: {type(exc).__name__}", raw=fields) from None
    if data is None:
        raise DecodeError("entry has no 'data' field", raw=fields)
    if not isinstance(data, str | bytes | bytearray):
        raise DecodeError(f"'data' is a {type(data).__name__}, not text", raw=fields)
    if len(data) > MAX_DATA_BYTES:
        raise DecodeError(f"'data' has {len(data)} bytes, more than {MAX_DATA_BYTES}", raw=fields)
    try:
        event = _ADAPTER.validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "event"
        raise DecodeError(f"invalid event: {where}: {err['msg']}", raw=fields) from None
    except Exception as exc:  # parser limits (depth, size), bad UTF-8 ...
        raise DecodeError(f"undecodable entry: {type(exc).__name__}: {exc}", raw=fields) from None
    for name, value in (("type", event.type), ("id", event.id)):
        given = _field(fields, name)
        if given is not None and _text(given) != value:
            raise DecodeError(f"the entry's {name!r} field does not match its data", raw=fields)
    return event


def decode_json(data: str | bytes) -> Event:
    """An event from its JSON form (as in `loops events --json`)."""
    return decode({"data": data})


def entry_type(fields: Mapping[Any, Any]) -> str | None:
    """The event type of an entry, read without decoding it (None when absent or not
    text: such an entry fails `decode` and is dead-lettered)."""
    try:
        return _text(_field(fields, "type"))
    except Exception:  # not a mapping of ours; `decode` says why
        return None
