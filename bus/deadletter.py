"""The dead-letter stream `{prefix}:dead`: entries a consumer group gave up on.

An entry lands here when it cannot be decoded (at once), when it was delivered more
than `max_deliveries` times without its handler succeeding (poison), or when it was
trimmed from the event stream before it was acked (only its id survives). Each dead
letter keeps the reason and a copy of the original fields, so nothing is silently lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from events import DecodeError, Event, decode

_FIELD = "field:"  # original fields are copied under this prefix, so names never clash
COPY_CAP = 64 * 1024  # bytes of each original field kept (a huge entry is not copied whole)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def dead_fields(
    *,
    entry_id: str,
    stream: str,
    group: str,
    consumer: str,
    reason: str,
    deliveries: int,
    fields: Mapping[Any, Any] | None,
) -> dict[str | bytes, str | bytes]:
    """The fields of the dead-letter entry recording `entry_id`."""
    out: dict[str | bytes, str | bytes] = {
        "entry_id": entry_id,
        "stream": stream,
        "group": group,
        "consumer": consumer,
        "reason": reason,
        "deliveries": str(deliveries),
    }
    for key, value in (fields or {}).items():
        name = key if isinstance(key, bytes) else str(key).encode()
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if len(raw) > COPY_CAP:
            out["truncated"] = "1"
            raw = raw[:COPY_CAP]
        out[_FIELD.encode() + name[:COPY_CAP]] = raw
    return out


def _count(text: str) -> int:
    try:
        return max(int(text), 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    dead_id: str  # id in the dead-letter stream
    entry_id: str  # id the entry had in the event stream
    stream: str
    group: str
    consumer: str
    reason: str
    deliveries: int
    fields: dict[str, bytes] = field(default_factory=dict)  # the original entry's fields

    @classmethod
    def from_entry(cls, dead_id: Any, raw: Mapping[Any, Any]) -> DeadLetter:
        def get(name: str) -> str:
            return _text(raw.get(name.encode(), raw.get(name, b"")))

        original: dict[str, bytes] = {}
        for key, value in raw.items():
            name = _text(key)
            if name.startswith(_FIELD):
                original[name[len(_FIELD) :]] = (
                    value if isinstance(value, bytes) else str(value).encode()
                )
        deliveries = get("deliveries")
        return cls(
            dead_id=_text(dead_id),
            entry_id=get("entry_id"),
            stream=get("stream"),
            group=get("group"),
            consumer=get("consumer"),
            reason=get("reason"),
            deliveries=_count(deliveries),
            fields=original,
        )

    def event(self) -> Event | None:
        """The original event, when it can be decoded (poison entries usually can)."""
        try:
            return decode(self.fields)
        except DecodeError:
            return None


def read_dead_letters(
    client: redis.Redis, prefix: str = "loops", *, since: str = "-", count: int = 100
) -> list[DeadLetter]:
    """Up to `count` dead letters from stream id `since` on, oldest first."""
    entries: Any = client.xrange(f"{prefix}:dead", min=since, max="+", count=count)
    return [DeadLetter.from_entry(dead_id, raw) for dead_id, raw in entries]
