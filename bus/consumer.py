"""A consumer in a consumer group: read, handle, ack; reclaim; dead-letter.

One poll:
1. every `reclaim_interval_ms`, XAUTOCLAIM entries idle for `reclaim_idle_ms` (a
   crashed consumer's, or ones whose handler raised) and handle them again, unless
   they were delivered more than `max_deliveries` times: those go to the dead-letter
   stream. Ids XAUTOCLAIM reports as deleted (trimmed before anyone acked them) are
   counted, logged and dead-lettered by id;
2. XREADGROUP COUNT `batch` BLOCK `block_ms` for new entries;
3. decode each entry (undecodable: dead-letter at once), filter, call the handler;
4. one XACK for the handled entries of the batch. A handler that raises leaves its
   entry pending; the consumer carries on with the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from bus import signing
from bus.api import Handler
from bus.deadletter import dead_fields
from events import EVENT_TYPES, DecodeError, Event, decode, entry_type

if TYPE_CHECKING:
    from bus.streams import RedisBus

log = logging.getLogger("loops.bus")

T = TypeVar("T")
Entry = tuple[Any, Mapping[Any, Any] | None]  # (stream id, fields) as redis-py returns them

_MAX_BACKOFF_S = 0.05
_MAX_ERRORS_KEPT = 1000


def blocking_read(
    call: Callable[[int | None], Sequence[T]],
    block_ms: int,
    wait: Callable[[float], object] = time.sleep,
) -> Sequence[T]:
    """`call(block_ms)` (a blocking XREAD/XREADGROUP), without busy-spinning on servers
    that answer an empty blocking read at once (fakeredis 2.40 does): when the reply
    is empty and came back well before `block_ms`, back off (1 ms doubling to 50 ms)
    and read again until `block_ms` has passed (or `wait` returns true: a stop
    event was set). A real Redis blocks, so this costs it nothing. `block_ms <= 0`
    reads without blocking."""
    if block_ms <= 0:
        return call(None)
    deadline = time.monotonic() + block_ms / 1000
    delay = 0.001
    remaining_ms = block_ms
    while True:
        started = time.monotonic()
        reply = call(remaining_ms)
        if reply:
            return reply
        now = time.monotonic()
        if now - started >= remaining_ms / 2000 or deadline - now <= 0.001:
            return reply  # the server did block: nothing arrived in time
        if wait(min(delay, deadline - now)):
            return reply  # `wait` is a stop event's wait(): the consumer is stopping
        delay = min(delay * 2, _MAX_BACKOFF_S)
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))


def _sid(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class SubscriptionStats:
    """What a subscription has done so far (for status pages and tests)."""

    handled: int = 0  # handler returned, entry acked
    skipped: int = 0  # filtered out by types/loop, acked without the handler
    failed: int = 0  # handler raised; entry left pending
    reclaimed: int = 0  # entries taken over with XAUTOCLAIM
    dead: int = 0  # entries moved to the dead-letter stream
    trimmed: int = 0  # pending entries trimmed from the stream before their ack


class RedisSubscription:
    """Consumer `consumer` of group `group` on the bus's stream (see module docstring).

    Not thread-safe: one subscription per thread; give each its own consumer name."""

    def __init__(
        self,
        bus: RedisBus,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        types: Collection[str] | None = None,
        loop: str | None = None,
    ) -> None:
        self.bus = bus
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.types = frozenset(types) if types is not None else None
        self.loop = loop
        self.stats = SubscriptionStats()
        self._settings = bus.settings
        self._client: Any = bus.client
        self._stream = bus.stream
        self._next_reclaim = 0.0
        self._errors: dict[Any, str] = {}  # entry id -> last handler error
        self._stop: threading.Event | None = None
        bus.ensure_group(group)

    # ------------------------------------------------------------------ public API

    def poll(self, block_ms: int = 1000) -> int:
        """Reclaim idle entries when due, read new ones (blocking up to `block_ms`),
        handle and ack them. Returns the number of events handled."""
        return self._poll(block_ms)[1]

    def drain(self, max_rounds: int = 1000) -> int:
        """Reclaim what is idle, then read without blocking until the stream has nothing
        new for this group. Returns the number handled."""
        self._next_reclaim = 0.0
        handled = 0
        for _ in range(max_rounds):
            seen, n = self._poll(0)
            handled += n
            if not seen:
                break
        return handled

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        """Poll until `stop` is set. A lost connection is logged and retried with
        back-off; any other error propagates."""
        self._stop = stop
        backoff = 0.1
        try:
            while not stop.is_set():
                try:
                    self.poll(block_ms)
                    backoff = 0.1
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning(
                        "bus: %s/%s lost Redis (%s); retrying", self.group, self.consumer, exc
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self._stop = None

    # ------------------------------------------------------------------ internals

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds`; True when the subscription was told to stop meanwhile."""
        if self._stop is not None:
            return self._stop.wait(seconds)
        time.sleep(seconds)
        return False

    def _poll(self, block_ms: int) -> tuple[int, int]:
        """(entries seen, events handled) of one poll."""
        seen = handled = 0
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self._settings.reclaim_interval_ms / 1000
            seen, handled = self._reclaim()
        entries = self._read(0 if seen else block_ms)
        if entries:
            handled += self._process(entries, None)
            seen += len(entries)
        return seen, handled

    def _read(self, block_ms: int) -> Sequence[Entry]:
        block_ms = self.bus.clamp_block(block_ms)
        streams = {self._stream: ">"}
        count = self._settings.batch

        def call(block: int | None) -> Sequence[Entry]:
            try:
                reply = self._client.xreadgroup(
                    self.group, self.consumer, streams, count=count, block=block
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.bus.ensure_group(self.group)  # the stream was deleted under us
                return []
            return reply[0][1] if reply else []

        return blocking_read(call, block_ms, self._wait)

    def _reclaim(self) -> tuple[int, int]:
        """XAUTOCLAIM idle entries of the group; returns (entries seen, handled)."""
        s = self._settings
        cursor: Any = "0-0"
        seen = handled = 0
        for _ in range(100):  # bounded: at most 100 batches per reclaim round
            try:
                reply = self._client.xautoclaim(
                    self._stream,
                    self.group,
                    self.consumer,
                    s.reclaim_idle_ms,
                    cursor,
                    count=s.batch,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.bus.ensure_group(self.group)  # the stream was deleted under us
                break
            cursor, claimed = reply[0], list(reply[1])
            deleted = list(reply[2]) if len(reply) > 2 else []
            # Redis 6.2 returned trimmed entries as (id, None) instead of listing them.
            deleted += [eid for eid, fields in claimed if fields is None]
            claimed = [(eid, fields) for eid, fields in claimed if fields is not None]
            if deleted:
                self._trimmed(deleted)
                seen += len(deleted)
            if claimed:
                self.stats.reclaimed += len(claimed)
                seen += len(claimed)
                handled += self._process(claimed, self._delivery_counts(claimed))
            if _sid(cursor) == "0-0":
                break
        return seen, handled

    def _delivery_counts(self, entries: Sequence[Entry]) -> dict[Any, int]:
        ids = [eid for eid, _ in entries]
        pending = self._client.xpending_range(
            self._stream,
            self.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) + 1000,
            consumername=self.consumer,
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    def _trimmed(self, ids: Sequence[Any]) -> None:
        self.stats.trimmed += len(ids)
        log.warning(
            "bus: %d pending entries of group %s were trimmed from %s before their ack: %s",
            len(ids),
            self.group,
            self._stream,
            ", ".join(_sid(i) for i in ids[:20]),
        )
        reason = "trimmed from the stream before it was acked; only its id survives"
        self._finish([], [(eid, None, reason, 0) for eid in ids], ack_dead=False)

    def _process(self, entries: Sequence[Entry], counts: dict[Any, int] | None) -> int:
        """Handle `entries`, then ack and dead-letter in one round trip."""
        acks: list[Any] = []
        dead: list[tuple[Any, Mapping[Any, Any] | None, str, int]] = []
        handled = 0
        types, loop = self.types, self.loop
        limit = self._settings.max_deliveries
        for entry_id, fields in entries:
            if fields is None:
                continue
            deliveries = counts.get(entry_id, 1) if counts is not None else 1
            if deliveries > limit:
                error = self._errors.pop(entry_id, "no error recorded by this consumer")
                reason = f"delivered {deliveries} times (limit {limit}); last error: {error}"
                dead.append((entry_id, fields, reason, deliveries))
                continue
            if types is not None:
                etype = entry_type(fields)
                if etype in EVENT_TYPES and etype not in types:
                    acks.append(entry_id)  # a known type this consumer does not want
                    self.stats.skipped += 1
                    continue
            try:
                event = decode(fields)
            except DecodeError as exc:
                dead.append((entry_id, fields, f"undecodable: {exc.reason}", deliveries))
                continue
            if (types is not None and event.type not in types) or (
                loop is not None and event.loop != loop
            ):
                acks.append(entry_id)
                self.stats.skipped += 1
                continue
            forged = self.bus.rejects(event.type, fields)
            if forged is not None:
                # Invariant 8: a decision without a valid signature never reaches a handler.
                dead.append((entry_id, fields, f"{forged}: {event.type} {event.id}", deliveries))
                continue
            if self._deliver(entry_id, event, deliveries):
                acks.append(entry_id)
                handled += 1
        self.stats.handled += handled
        self._finish(acks, dead)
        return handled

    def _deliver(self, entry_id: Any, event: Event, deliveries: int) -> bool:
        """Call the handler; True when the entry may be acked now. (`bus.router`
        overrides this to hand the event to a loop and ack once the loop handled it.)"""
        try:
            self.handler(event)
        except Exception as exc:
            self.failed(entry_id, event, exc, deliveries)
            return False
        self._errors.pop(entry_id, None)
        return True

    def failed(self, entry_id: Any, event: Event, exc: BaseException, deliveries: int) -> None:
        """Record a handler's failure. At least once: the entry stays pending; it is
        reclaimed after reclaim_idle_ms and dead-lettered after max_deliveries attempts."""
        self.stats.failed += 1
        if len(self._errors) >= _MAX_ERRORS_KEPT:
            self._errors.pop(next(iter(self._errors)))
        self._errors[entry_id] = f"{type(exc).__name__}: {exc}"
        log.error(
            "bus: handler of %s/%s failed on %s %s (delivery %d of %d)",
            self.group,
            self.consumer,
            event.type,
            event.id,
            deliveries,
            self._settings.max_deliveries,
            exc_info=exc,
        )

    def _finish(
        self,
        acks: list[Any],
        dead: list[tuple[Any, Mapping[Any, Any] | None, str, int]],
        ack_dead: bool = True,
    ) -> None:
        if not dead:
            if acks:
                self._client.xack(self._stream, self.group, *acks)
            return
        records = []
        for entry_id, fields, reason, deliveries in dead:
            once = reason.startswith(("undecodable", signing.UNSIGNED, signing.BAD_SIGNATURE))
            if once and not self.bus.first_dead_letter(entry_id):
                continue  # another group already recorded this entry
            records.append((entry_id, fields, reason, deliveries))
        pipe = self._client.pipeline(transaction=False)
        for entry_id, fields, reason, deliveries in records:
            log.error("bus: dead-lettering %s for group %s: %s", _sid(entry_id), self.group, reason)
            pipe.xadd(
                self.bus.dead_stream,
                dead_fields(
                    entry_id=_sid(entry_id),
                    stream=self._stream,
                    group=self.group,
                    consumer=self.consumer,
                    reason=reason,
                    deliveries=deliveries,
                    fields=fields,
                ),
                maxlen=self._settings.dead_maxlen,
                approximate=True,
            )
        to_ack = acks + ([d[0] for d in dead] if ack_dead else [])
        if to_ack:
            pipe.xack(self._stream, self.group, *to_ack)
        pipe.execute()
        self.stats.dead += len(dead)
