"""Skip events a handler has already handled.

Delivery is at least once: a handler can see an event twice (its consumer crashed
before the ack, or an XADD landed twice after a timeout). Handlers dedupe on
`event.id`, through one of two memories with one interface (`Dedupe`):

- `Idempotency` remembers handled ids in Redis (`SET key NX EX ttl`), so the memory is
  shared by every consumer of a group, across restarts (the gate's claims);
- `Window` remembers the last ids in the process, in a list the caller may save with
  the state the marks guard (the worker's state file), or rebuild by replaying the
  stream (the monitor's and the PM's folds).
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

from bus.api import Handler
from events import Event

log = logging.getLogger("loops.bus")

DEFAULT_TTL_S = 7 * 24 * 3600


class Dedupe(Protocol):
    """What a handler asks of its memory of handled events."""

    def seen(self, event_id: str) -> bool: ...

    def mark(self, event_id: str) -> None: ...

    def first_time(self, event_id: str) -> bool: ...


class Window:
    """The ids handled most recently, in this process: at least the last `size`.

    `ids` (oldest first) is the memory itself: pass the list a state file holds and
    save it with the state, and the marks survive exactly as that state does. Not
    shared between processes: use `Idempotency` for that."""

    def __init__(self, size: int, ids: list[str] | None = None) -> None:
        self.size = size
        self.ids: list[str] = ids if ids is not None else []
        self._index = set(self.ids)

    def seen(self, event_id: str) -> bool:
        return event_id in self._index

    def mark(self, event_id: str) -> None:
        self.first_time(event_id)

    def first_time(self, event_id: str) -> bool:
        """Mark `event_id`; False if it was marked already."""
        if event_id in self._index:
            return False
        self.ids.append(event_id)
        self._index.add(event_id)
        if len(self.ids) > self.size + max(1, self.size // 4):  # forget in batches
            self._index.difference_update(self.ids[: -self.size])
            del self.ids[: -self.size]
        return True


class Idempotency:
    """Handled-event memory under the key namespace `key` (e.g. `loops:done:gate`)."""

    def __init__(self, client: redis.Redis, key: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.client = client
        self.key = key
        self.ttl_s = ttl_s

    def _key(self, event_id: str) -> str:
        return f"{self.key}:{event_id}"

    def seen(self, event_id: str) -> bool:
        """Whether `event_id` was marked as handled."""
        return bool(self.client.exists(self._key(event_id)))

    def mark(self, event_id: str) -> None:
        """Remember `event_id` as handled (for `ttl_s` seconds)."""
        self.client.set(self._key(event_id), b"1", ex=self.ttl_s)

    def first_time(self, event_id: str) -> bool:
        """Mark `event_id` and say whether it was new (atomic: exactly one caller wins).

        Use it for effects that must happen at most once (a notification); for work
        that must happen at least once, use `wrap`, which marks only after success."""
        return bool(self.client.set(self._key(event_id), b"1", nx=True, ex=self.ttl_s))

    def forget(self, event_id: str) -> None:
        self.client.delete(self._key(event_id))

    def wrap(self, handler: Handler) -> Handler:
        """`handler`, skipping events already handled; an event is marked only after the
        handler returned, so a failure or a crash leaves it to be handled again. Two
        copies of one event handled at the same instant by two consumers can both run:
        keep handlers idempotent."""

        def idempotent(event: Event) -> None:
            if self.seen(event.id):
                log.debug("skipping %s %s: already handled", event.type, event.id)
                return
            handler(event)
            self.mark(event.id)

        return idempotent
