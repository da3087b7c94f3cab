"""The seams of the bus, declared once. Implementations live beside this file."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from events import Event

Handler = Callable[[Event], None]
"""Handles one event. Returning acks it; raising leaves it pending (redelivered later)."""


class Subscription(Protocol):
    """A consumer in a consumer group, bound to one handler."""

    group: str
    consumer: str

    def poll(self, block_ms: int = 1000) -> int:
        """Reclaim idle entries, read new ones (blocking up to `block_ms`), handle and ack
        them. Returns the number of events handled."""

    def drain(self, max_rounds: int = 1000) -> int:
        """Poll without blocking until nothing is left to handle (burst mode, for tests
        and `loops up` without --serve). Returns the number handled."""

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        """Poll until `stop` is set."""


class Bus(Protocol):
    """Typed publish/subscribe over one Redis stream."""

    def publish(self, event: Event) -> str:
        """Append one event; returns its stream id."""

    def publish_many(self, events: Sequence[Event]) -> list[str]:
        """Append several events in one round trip; returns their stream ids."""

    def subscribe(
        self,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        types: Collection[str] | None = None,
        loop: str | None = None,
    ) -> Subscription:
        """A consumer `consumer` in group `group` (created from the stream's start if new).
        Events not matching `types` / `loop` are acked without calling the handler."""

    def replay(
        self,
        since: str | datetime = "-",
        *,
        until: str | datetime = "+",
        types: Collection[str] | None = None,
        loop: str | None = None,
        count: int | None = None,
    ) -> Iterator[tuple[str, Event]]:
        """Events from a stream id or a time onwards, oldest first, without a group.
        Undecodable entries are skipped (they are in the dead-letter stream)."""

    def tail(
        self, after: str = "$", block_ms: int = 1000, count: int = 100
    ) -> list[tuple[str, Event]]:
        """Events appended after stream id `after` (blocking up to `block_ms`), for
        followers such as `loops events --follow` and the dashboard."""
