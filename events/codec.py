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


def encode(event: Event) -> dict[str, str]:
    """The stream fields for `event`."""
    return {"type": event.type, "id": event.id, "data": event.model_dump_json()}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    return None


def decode(fields: Mapping[Any, Any]) -> Event:
    """The event held in a stream entry's fields; `DecodeError` (with the raw fields)
    when the entry is not a valid event of a known type."""
    data = fields.get(b"data")
    if data is None:
        data = fields.get("data")
    if data is None:
        raise DecodeError("entry has no 'data' field", raw=fields)
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "event"
        raise DecodeError(f"invalid event: {where}: {err['msg']}", raw=fields) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"undecodable entry: {exc}", raw=fields) from None


def decode_json(data: str | bytes) -> Event:
    """An event from its JSON form (as in `loops events --json`)."""
    return decode({"data": data})


def entry_type(fields: Mapping[Any, Any]) -> str | None:
    """The event type of an entry, read without decoding it."""
    return _text(fields.get(b"type", fields.get("type")))
