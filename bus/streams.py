"""`RedisBus`: the `bus.api.Bus` over one Redis stream, `{prefix}:events`.

Entries are `events.encode(event)`: `type` and `id` readable without decoding, and
`data`, the event as JSON, plus `sig` (its HMAC, see `bus/signing.py`) when the bus
has a signing key. Every string of an event is redacted before it is written
(`events.secrets`, invariant 7). Every XADD trims the stream approximately (see
`BusSettings.trim`). Only Redis 7.0 commands are used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from pydantic import ValidationError

from bus import signing
from bus.api import Bus, Handler, Subscription
from bus.consumer import RedisSubscription, blocking_read
from bus.deadletter import DeadLetter, read_dead_letters
from bus.idempotency import Idempotency
from bus.settings import BusSettings, TrimPolicy, connect
from events import EVENT_TYPES, DecodeError, Event, decode, entry_type
from events.secrets import contains_secret, redact_obj

log = logging.getLogger("loops.bus")

_PAGE = 500


def _sid(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pack_head(args: tuple[bytes, ...], signed: bool = False) -> bytes:
    """RESP for `args` plus `* type T id I data D [sig S]`: the array header and the
    bulk strings up to the entry id; `_pack_xadd` appends the field strings."""
    bulks = b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in (*args, b"*"))
    return b"*%d\r\n%b" % (len(args) + (9 if signed else 7), bulks)


def redacted_json(event: Event) -> bytes:
    """The event's JSON with every secret in any of its strings masked.

    The common case costs one scan of the JSON text (`contains_secret`); only an event
    that holds a secret is rebuilt through its model from redacted values."""
    data = event.__pydantic_serializer__.to_json(event)  # bytes: no str round trip
    if not contains_secret(data.decode("utf-8", "replace"), json_escaped=True):
        return data
    clean = redact_obj(event.model_dump(mode="json"))
    try:
        safe = type(event).model_validate(clean)
    except ValidationError:
        # A field whose constraints the mask breaks: publish the masked values anyway
        # (a consumer dead-letters what it cannot decode); never the secret.
        log.warning("bus: %s %s no longer validates once redacted", event.type, event.id)
        safe = type(event).model_construct(**clean)
        return safe.__pydantic_serializer__.to_json(safe, warnings=False)
    return safe.__pydantic_serializer__.to_json(safe)


def _pack_xadd(head: bytes, event: Event, key: bytes | None = None) -> bytes:
    """RESP for one XADD of `event` (fields as `events.encode` writes them, redacted,
    plus `sig` when `key` is given; `head` must be packed with `signed=key is not None`)."""
    etype, eid = event.type.encode(), event.id.encode()
    data = redacted_json(event)
    packed = (
        b"%b$4\r\ntype\r\n$%d\r\n%b\r\n$2\r\nid\r\n$%d\r\n%b\r\n$4\r\ndata\r\n$%d\r\n%b\r\n"
        % (
            head,
            len(etype),
            etype,
            len(eid),
            eid,
            len(data),
            data,
        )
    )
    if key is None:
        return packed
    return packed + b"$3\r\nsig\r\n$64\r\n%b\r\n" % signing.sign(key, data)


def stream_id(at: str | datetime, *, end: bool = False) -> str:
    """A stream id bound for XRANGE: an id as is, a datetime as its millisecond
    (`ms-0` as a start, `ms-<max>` as an end; naive datetimes are UTC)."""
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ms = int(at.timestamp() * 1000)
    return f"{ms}-18446744073709551615" if end else f"{ms}-0"


class RedisBus:
    """Typed publish/subscribe over one Redis stream (implements `bus.api.Bus`).

    `client` is passed in (real Redis from `connect()`, or fakeredis in tests) and is
    not closed by the bus unless it was created by `RedisBus.from_settings`."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str | None = None,
        settings: BusSettings | None = None,
    ) -> None:
        settings = settings or BusSettings()
        if prefix is not None and prefix != settings.prefix:
            settings = settings.with_(prefix=prefix)
        self.client = client
        # redis-py's reply types are unions too wide to narrow at every call; the
        # shapes we rely on are pinned by the contract suite on both backends.
        self._r: Any = client
        self.settings = settings
        self.prefix = settings.prefix
        self.stream = f"{self.prefix}:events"
        self.dead_stream = f"{self.prefix}:dead"
        self._owns_client = False
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        # A BLOCK must end before the socket times out, else the read fails client-side.
        self._max_block_ms = int(timeout * 1000 * 0.8) if timeout else None
        # XADD up to the entry id, packed once (RESP): the same for every publish.
        self._xadd_head: tuple[bytes, ...] = (b"XADD", self.stream.encode())
        if settings.trim is TrimPolicy.MAXLEN:
            self._xadd_head += (b"MAXLEN", b"~", str(settings.maxlen).encode())
        self._key = settings.signing_key
        self._packed_head = _pack_head(self._xadd_head, signed=self._key is not None)

    @classmethod
    def from_settings(cls, settings: BusSettings) -> RedisBus:
        """A bus with its own client (`connect(settings)`), closed by `close()`."""
        bus = cls(connect(settings), settings=settings)
        bus._owns_client = True
        return bus

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RedisBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ publish

    def _head(self) -> bytes:
        """`XADD key [trim] *`, packed, for the next publish (MINID moves with the clock)."""
        if self.settings.trim is TrimPolicy.MINID:
            cutoff = max(int((time.time() - self.settings.retention_s) * 1000), 0)
            return _pack_head(
                (*self._xadd_head, b"MINID", b"~", b"%d-0" % cutoff), signed=self._key is not None
            )
        return self._packed_head

    def _send(self, packed: list[bytes]) -> list[Any]:
        """Send packed commands in one write and read their replies (one round trip).

        The hot path packs XADD itself: redis-py's generic packing costs more than
        the rest of a pipelined publish. Any failure drops the connection, so that
        unread replies can never be taken for the answers to later commands."""
        pool: Any = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(packed)])
            return [conn.read_response() for _ in packed]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def publish(self, event: Event) -> str:
        """Append one event (redacted, and signed when the bus has a key); returns its
        stream id. Not retried: after a timeout the entry may or may not exist, which
        is why consumers dedupe on `event.id`."""
        return _sid(self._send([_pack_xadd(self._head(), event, self._key)])[0])

    def publish_many(self, events: Sequence[Event]) -> list[str]:
        """Append several events in one pipelined round trip; returns their stream ids."""
        if not events:
            return []
        head, key = self._head(), self._key
        return [_sid(i) for i in self._send([_pack_xadd(head, e, key) for e in events])]

    def rejects(self, event_type: str, fields: Any) -> str | None:
        """Why a consumer of this bus must drop the entry `fields` of decoded type
        `event_type` (a decision without a valid signature), or None. A bus without a
        key checks nothing."""
        if self._key is None:
            return None
        return signing.check(self._key, event_type, fields)

    # ------------------------------------------------------------------ consume

    def ensure_group(self, group: str) -> None:
        """Create consumer group `group` from the stream's start (id 0, MKSTREAM), so
        events published before the group existed are delivered too."""
        # Look before creating: an error reply (BUSYGROUP) makes fakeredis's TCP
        # server drop the connection, and the next command on it would fail.
        if self._r.exists(self.stream):
            names = {_sid(g["name"]) for g in self._r.xinfo_groups(self.stream)}
            if group in names:
                return
        try:
            self.client.xgroup_create(self.stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def subscribe(
        self,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        types: Collection[str] | None = None,
        loop: str | None = None,
    ) -> RedisSubscription:
        """A consumer `consumer` in group `group` (created from the stream's start if
        new). Events not matching `types` / `loop` are acked without the handler."""
        if types is not None:
            unknown = sorted(set(types) - set(EVENT_TYPES))
            if unknown:
                raise ValueError(f"unknown event types: {', '.join(unknown)}")
        return RedisSubscription(self, group, consumer, handler, types=types, loop=loop)

    def clamp_block(self, block_ms: int) -> int:
        """`block_ms`, lowered to stay under the client's socket timeout."""
        if self._max_block_ms is not None and block_ms > self._max_block_ms:
            return self._max_block_ms
        return block_ms

    # ------------------------------------------------------------------ read

    def _matches(self, fields: Any, types: frozenset[str] | None, loop: str | None) -> Event | None:
        if types is not None and entry_type(fields) not in types:
            return None
        try:
            event = decode(fields)
        except DecodeError as exc:
            log.debug("bus: skipping undecodable entry: %s", exc.reason)
            return None
        if loop is not None and event.loop != loop:
            return None
        reason = self.rejects(event.type, fields)
        if reason is not None:
            log.debug("bus: skipping %s %s: %s", event.type, event.id, reason)
            return None
        return event

    def replay(
        self,
        since: str | datetime = "-",
        *,
        until: str | datetime = "+",
        types: Collection[str] | None = None,
        loop: str | None = None,
        count: int | None = None,
    ) -> Iterator[tuple[str, Event]]:
        """Events from a stream id or a time (`since`, inclusive) to `until`
        (inclusive), oldest first, without a group. Times are the stream's append
        times. Undecodable entries are skipped (consumers dead-letter them)."""
        wanted = frozenset(types) if types is not None else None
        start, end = stream_id(since), stream_id(until, end=True)
        yielded = 0
        while count is None or yielded < count:
            page = self._r.xrange(self.stream, min=start, max=end, count=_PAGE)
            for entry_id, fields in page:
                event = self._matches(fields, wanted, loop)
                if event is not None:
                    yield _sid(entry_id), event
                    yielded += 1
                    if count is not None and yielded >= count:
                        return
            if len(page) < _PAGE:
                return
            start = "(" + _sid(page[-1][0])

    def last_id(self) -> str:
        """The id of the newest entry, or `0-0` when the stream is empty."""
        newest = self._r.xrevrange(self.stream, count=1)
        return _sid(newest[0][0]) if newest else "0-0"

    def tail(
        self, after: str = "$", block_ms: int = 1000, count: int = 100
    ) -> list[tuple[str, Event]]:
        """Events appended after stream id `after` (`$`: after now), blocking up to
        `block_ms` for the first; pass the last returned id as the next `after`."""
        cursor = self.last_id() if after == "$" else after
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))

            def call(block: int | None, cursor: str = cursor) -> Any:
                return self._r.xread({self.stream: cursor}, count=count, block=block)

            reply = blocking_read(call, self.clamp_block(remaining))
            if not reply:
                return []
            entries = reply[0][1]
            out = [(_sid(i), e) for i, f in entries if (e := self._matches(f, None, None))]
            if out:
                return out
            # Only undecodable entries: read past them (a follower that got [] would
            # otherwise read the same ones again and again).
            cursor = _sid(entries[-1][0])

    # ------------------------------------------------------------------ helpers

    def dead_letters(self, since: str = "-", count: int = 100) -> list[DeadLetter]:
        """Up to `count` dead letters, oldest first."""
        return read_dead_letters(self.client, self.prefix, since=since, count=count)

    def first_dead_letter(self, entry_id: Any) -> bool:
        """Whether no group has dead-lettered the undecodable entry `entry_id` yet
        (and claim it), so one bad entry is recorded once, not once per group."""
        key = f"{self.prefix}:dead:seen:{_sid(entry_id)}"
        return bool(self.client.set(key, b"1", nx=True, ex=7 * 24 * 3600))

    def idempotency(self, scope: str, ttl_s: int = 7 * 24 * 3600) -> Idempotency:
        """Handled-event memory for `scope` (usually the group name)."""
        return Idempotency(self.client, f"{self.prefix}:done:{scope}", ttl_s)

    def keys(self) -> list[str]:
        """Every key of this bus (stream, dead letters, idempotency marks)."""
        return [_sid(k) for k in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)]

    def delete_all(self) -> int:
        """Delete every key of this bus (tests, `loops` resets). Returns how many."""
        keys = self.keys()
        for i in range(0, len(keys), 500):
            self.client.delete(*keys[i : i + 500])
        return len(keys)


if TYPE_CHECKING:  # mypy proves the implementations satisfy the seams of api.py

    def _conforms(bus: RedisBus, sub: RedisSubscription) -> tuple[Bus, Subscription]:
        return bus, sub
