"""One-line text for events, safe for a terminal (`loops events`, feeds)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

import events as ev

_ENVELOPE = set(ev.Event.model_fields)
MAX_VALUE = 120


def clean(text: str, limit: int = MAX_VALUE) -> str:
    """`text` safe for a terminal: control characters escaped (agent output must not
    drive the operator's terminal), and cut to `limit` characters."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _value(value: Any) -> str:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (not value or " " in value) else value
    if isinstance(value, BaseModel | list | dict):
        data = _plain(value)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def event_fields(event: ev.Event) -> str:
    """The event's own fields as `key=value ...`, leaving out unset ones."""
    parts = []
    for name, field in type(event).model_fields.items():
        if name in _ENVELOPE:
            continue
        value = getattr(event, name)
        if value is None or value == [] or (value == field.default and name != "status"):
            continue
        parts.append(f"{name}={clean(_value(value))}")
    return " ".join(parts)


def event_line(event: ev.Event) -> str:
    """`HH:MM:SS loop type key=value ...` in local time, as `loops events` prints it."""
    stamp = event.ts.astimezone().strftime("%H:%M:%S")
    return f"{stamp} {clean(event.loop or '-', 40)} {event.type} {event_fields(event)}".rstrip()
