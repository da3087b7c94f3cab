"""Skip events a handler has already handled.

Delivery is at least once: a handler can see an event twice (its consumer crashed
before the ack, or an XADD landed twice after a timeout). Handlers dedupe on
`event.id`. `Idempotency` remembers handled ids in Redis (`SET key NX EX ttl`), so
the memory is shared by every consumer of a group, across restarts.
"""

from __future__ import annotations

import logging

import redis

from bus.api import Handler
from events import Event

log = logging.getLogger("loops.bus")

DEFAULT_TTL_S = 7 * 24 * 3600


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
