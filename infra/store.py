"""The one Redis key-value store of the roles: what a role must keep across its own
restarts (the gate's progress and open escalations, the merge queue's tries, the
monitor's incidents, the human interface's escalations).

Keys are `{prefix}:{role}:{name}` on one client, passed in (never created here), so a
test's fakeredis and production's Redis are interchangeable; `Store.memory()` is one
on a private fakeredis, for a role run without a bus of its own. Timeouts are the
client's (`socket_timeout`), set by whoever builds it (`bus.connect`).
"""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import redis

JSON = dict[str, Any]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class Store:
    """Strings, counters, JSON documents in hashes and times in sorted sets, under
    `{prefix}:{role}:`."""

    def __init__(self, client: redis.Redis, prefix: str = "loops", role: str = "agents") -> None:
        self.client = client
        self.base = f"{prefix}:{role}"

    @classmethod
    def memory(cls, role: str = "memory") -> Store:
        """A store of this process only (lost on exit)."""
        return cls(fakeredis.FakeRedis(), "memory", role)

    def key(self, *parts: str) -> str:
        return ":".join((self.base, *parts))

    def claim(self, name: str, value: str = "1", ttl_s: float | None = None) -> bool:
        """Set `name` only if absent (SET NX). True for the one caller that set it."""
        px = int(ttl_s * 1000) if ttl_s else None
        return bool(self.client.set(self.key(name), value, nx=True, px=px))

    def get(self, name: str) -> str | None:
        return _text(self.client.get(self.key(name)))

    def set(self, name: str, value: str) -> None:
        self.client.set(self.key(name), value)

    def delete(self, *names: str) -> None:
        if names:
            self.client.delete(*(self.key(n) for n in names))

    def incr(self, name: str) -> int:
        return int(self.client.incr(self.key(name)))  # type: ignore[arg-type]

    # Documents in a hash: one JSON value per field.
    def doc_put(self, table: str, field: str, doc: JSON) -> None:
        self.client.hset(self.key(table), field, json.dumps(doc, sort_keys=True))

    def doc_get(self, table: str, field: str) -> JSON | None:
        raw = _text(self.client.hget(self.key(table), field))  # type: ignore[arg-type]
        return None if raw is None else dict(json.loads(raw))

    def doc_all(self, table: str) -> dict[str, JSON]:
        raw: dict[Any, Any] = self.client.hgetall(self.key(table))  # type: ignore[assignment]
        return {str(_text(k)): dict(json.loads(str(_text(v)))) for k, v in raw.items()}

    def doc_delete(self, table: str, field: str) -> None:
        self.client.hdel(self.key(table), field)

    # Times in a sorted set (member -> epoch seconds), for windows such as mass death.
    def mark(self, table: str, member: str, at: float) -> None:
        """Record when `member` was first marked (a later mark keeps the first time)."""
        self.client.zadd(self.key(table), {member: at}, nx=True)

    def marked_at(self, table: str, member: str) -> float | None:
        score = self.client.zscore(self.key(table), member)
        return None if score is None else float(score)  # type: ignore[arg-type]

    def marked_since(self, table: str, since: float) -> list[str]:
        members: list[Any] = self.client.zrangebyscore(self.key(table), since, "+inf")  # type: ignore[assignment]
        return [str(_text(m)) for m in members]

    def unmark_before(self, table: str, before: float) -> None:
        self.client.zremrangebyscore(self.key(table), "-inf", f"({before}")

    def clear(self) -> None:
        """Delete every key of this store (tests, and `loops` state resets)."""
        for k in self.client.scan_iter(match=f"{self.base}:*", count=500):
            self.client.delete(k)
