"""One subscription for every loop a process runs, routing each event to the loops
it concerns.

Why: with one consumer group per loop, every event on the stream was read, filtered
and acked once per loop, so a published event cost O(N loops) Redis calls, and every
idle loop held a connection in its blocking read (N + 7 connections). A `Router`
reads the stream once per process (group `router_group(loops)`) on one thread and
hands each event to the in-memory `Inbox` of the loops it concerns: the loop named
by `event.loop`, or every loop for the `broadcast` types (another loop's
`task.passed` for cross-loop dependencies, an answer found by escalation id). A
published event now costs the same whatever the number of loops.

At least once (invariant 2) is kept:
- an entry is acked only once every loop it went to has handled it (returned); the
  loops report back through `done()`, and the router acks with one XACK per poll;
- a handler that raised leaves the entry pending: XAUTOCLAIM takes it back after
  `reclaim_idle_ms` and routes it again (loops dedupe on `event.id`), up to
  `max_deliveries`, then it is dead-lettered, exactly as for any consumer;
- entries still waiting in an inbox (the loop is busy running its agent) are kept
  fresh with `XCLAIM ... JUSTID` (which resets their idle time without counting a
  delivery), so they are neither reclaimed from under the loop nor dead-lettered;
- a process that dies leaves its entries pending under its consumer name; the next
  process with the same loops (same group) reclaims them after `reclaim_idle_ms`;
- an inbox outlives its loop's thread: a loop restarted by the supervisor takes the
  events its predecessor had not handled yet.

Distributed mode: the group is named after the set of loops, so two processes that
run different loops (`loops worker alpha` here, `loops up --only beta,gamma` there)
are two groups and each sees every event; a single loop keeps the group it always
had, `worker:<loop>`. Two processes must not run the same loop (the up lock and the
operator's runbook see to that), else they would share its group's entries.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from bus.api import Handler
from bus.consumer import RedisSubscription
from events import Event

if TYPE_CHECKING:
    from bus.streams import RedisBus

log = logging.getLogger("loops.bus")


def router_group(loops: Collection[str]) -> str:
    """The consumer group of a process running `loops`: `worker:<loop>` for one loop
    (the group `loops worker LOOP` always used), else `workers:<hash of the set>`."""
    names = sorted(set(loops))
    if len(names) == 1:
        return f"worker:{names[0]}"
    digest = hashlib.sha1(",".join(names).encode()).hexdigest()[:12]
    return f"workers:{digest}"


class Inbox:
    """The events routed to one loop, waiting for its thread to handle them."""

    def __init__(self, router: Router, loop: str) -> None:
        self.router = router
        self.loop = loop
        self._queue: queue.SimpleQueue[tuple[Any, Event, int]] = queue.SimpleQueue()

    def put(self, entry_id: Any, event: Event, deliveries: int) -> None:
        self._queue.put((entry_id, event, deliveries))

    def __len__(self) -> int:
        return self._queue.qsize()

    def poll(self, handler: Handler, block_ms: int = 0) -> int:
        """Handle what is waiting (waiting up to `block_ms` for the first event); each
        one is reported to the router, which acks it once every loop it went to
        handled it. Returns the number handled."""
        handled = 0
        timeout = block_ms / 1000 if block_ms > 0 else None
        while True:
            try:
                if timeout is not None and handled == 0:
                    item = self._queue.get(timeout=timeout)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                return handled
            entry_id, event, deliveries = item
            try:
                handler(event)
            except Exception as exc:
                self.router.done(entry_id, ok=False, event=event, exc=exc, deliveries=deliveries)
                continue
            self.router.done(entry_id, ok=True)
            handled += 1


class _RoutedSubscription(RedisSubscription):
    """The router's consumer: `_deliver` hands an event to inboxes instead of a handler."""

    def __init__(self, bus: RedisBus, group: str, consumer: str, router: Router, types: Any):
        self.router = router
        super().__init__(bus, group, consumer, lambda _e: None, types=types)

    def _deliver(self, entry_id: Any, event: Event, deliveries: int) -> bool:
        return self.router.dispatch(entry_id, event, deliveries)

    def _poll(self, block_ms: int) -> tuple[int, int]:
        self.router.settle()
        if time.monotonic() >= self._next_reclaim:
            self.router.touch()
        return super()._poll(block_ms)


class Router:
    """Routes one subscription's events to the inboxes of the loops it serves."""

    def __init__(
        self,
        bus: RedisBus,
        loops: Collection[str],
        *,
        consumer: str,
        types: Collection[str] | None = None,
        broadcast: Collection[str] = (),
    ) -> None:
        self.bus = bus
        self.loops = frozenset(loops)
        self.broadcast = frozenset(broadcast)
        self.group = router_group(self.loops)
        self._inboxes = {name: Inbox(self, name) for name in sorted(self.loops)}
        self._lock = threading.Lock()
        self._inflight: dict[Any, list[int]] = {}  # entry id -> [loops left, failures]
        self._acks: list[Any] = []
        self.touches = 0  # XCLAIM JUSTID rounds (for tests and stats)
        self.routed = 0  # entries read and routed (to no loop, one, or all)
        self.subscription = _RoutedSubscription(bus, self.group, consumer, self, types)

    def inbox(self, loop: str) -> Inbox:
        return self._inboxes[loop]

    def targets(self, event: Event) -> list[str]:
        """The loops `event` concerns."""
        if event.type in self.broadcast:
            return list(self._inboxes)
        if event.loop in self._inboxes:
            return [event.loop]
        return []

    # -------------------------------------------------------- the router's thread

    def dispatch(self, entry_id: Any, event: Event, deliveries: int) -> bool:
        """Hand `event` to its loops; True when no loop wants it (ack it now)."""
        with self._lock:
            self.routed += 1
            if entry_id in self._inflight:
                return False  # reclaimed while still waiting in an inbox: already there
            targets = self.targets(event)
            if not targets:
                return True
            self._inflight[entry_id] = [len(targets), 0]
        for name in targets:
            self._inboxes[name].put(entry_id, event, deliveries)
        return False

    def settle(self) -> None:
        """Ack the entries every target loop has handled (one XACK)."""
        with self._lock:
            acks, self._acks = self._acks, []
        if acks:
            self.bus.client.xack(self.bus.stream, self.group, *acks)

    def touch(self) -> None:
        """Reset the idle time of entries still waiting in inboxes (XCLAIM JUSTID does
        not count a delivery), so the reclaim that follows leaves them alone."""
        with self._lock:
            waiting = list(self._inflight)
        if waiting:
            self.bus.client.xclaim(
                self.bus.stream,
                self.group,
                self.subscription.consumer,
                0,
                waiting,
                justid=True,
            )
            self.touches += 1

    # -------------------------------------------------------- the loops' threads

    def done(
        self,
        entry_id: Any,
        *,
        ok: bool,
        event: Event | None = None,
        exc: BaseException | None = None,
        deliveries: int = 1,
    ) -> None:
        """A loop handled (`ok`) or failed on entry `entry_id`."""
        if not ok and event is not None and exc is not None:
            self.subscription.failed(entry_id, event, exc, deliveries)
        with self._lock:
            state = self._inflight.get(entry_id)
            if state is None:
                return
            state[0] -= 1
            state[1] += 0 if ok else 1
            if state[0] > 0:
                return
            del self._inflight[entry_id]
            if state[1] == 0:
                self._acks.append(entry_id)
            # else: left pending; reclaimed after reclaim_idle_ms and routed again

    def pending(self) -> int:
        """Entries handed to loops and not yet settled."""
        with self._lock:
            return len(self._inflight)

    def run(self, stop: threading.Event, block_ms: int = 200) -> None:
        """The router's thread (retries a lost Redis, as every subscription does)."""
        self.subscription.run(stop, block_ms=block_ms)
