"""The thin loop that runs an agent on a bus: subscribe, handle, publish, tick.

All decisions are in the agents' `handle(event)` and `tick(now)`; this only moves
events. It is what `loops monitor|pm|human` call (group = role name).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

import redis

from bus import Bus
from events import Event, utcnow

log = logging.getLogger("loops.agents")


class Agent(Protocol):
    """What `run` needs of an agent (Monitor, ProjectManager, HumanAgent)."""

    @property
    def types(self) -> Collection[str]: ...

    @property
    def warm_up_window(self) -> str | timedelta | None:
        """What `run` replays on start unless told otherwise."""

    def handle(self, event: Event) -> list[Event]: ...

    def tick(self, now: datetime) -> list[Event]: ...

    def warm_up(self, events: Iterable[Event], since: datetime | None = None) -> int: ...


def consumer_name(group: str) -> str:
    return f"{group}-{socket.gethostname()}-{os.getpid()}"


def warm_up(agent: Agent, bus: Bus, since: str | datetime) -> int:
    """Rebuild the agent's view from the stream, without acting on it."""
    events = (event for _, event in bus.replay(since, types=agent.types))
    return agent.warm_up(events, since if isinstance(since, datetime) else None)


def run(
    agent: Agent,
    bus: Bus,
    stop: threading.Event,
    *,
    group: str,
    consumer: str | None = None,
    tick_s: float = 0.25,
    warm_up_since: str | datetime | timedelta | Literal[False] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Run `agent` until `stop` is set: replay (from `warm_up_since`; None: the agent's
    `warm_up_window`; False: no replay), then consume as `group`,
    publishing what `handle` returns, and call `tick` at least every `tick_s`.
    Time-based rules fire up to one `tick_s` after their threshold (a stale heartbeat:
    2 intervals + `tick_s` at worst).

    What `handle` and `tick` return goes through an outbox: an event leaves it only
    once the bus has it. A publish that fails makes the handler raise, so the bus
    delivers the event again; the agent has folded it in already (its `handle`
    returns nothing the second time), and the redelivery publishes what the outbox
    still holds, with the same ids (a copy that did land dedupes). A lost Redis
    connection is retried with back-off; any other error from a tick ends the run,
    and the supervisor restarts the role."""
    if warm_up_since is None:
        warm_up_since = agent.warm_up_window
    if warm_up_since is False:
        warm_up_since = None
    if isinstance(warm_up_since, timedelta):
        warm_up_since = clock() - warm_up_since
    if warm_up_since is not None:
        warm_up(agent, bus, warm_up_since)

    outbox: deque[Event] = deque()

    def flush() -> None:
        while outbox:
            batch = list(outbox)
            bus.publish_many(batch)
            for _ in batch:
                outbox.popleft()

    def handler(event: Event) -> None:
        outbox.extend(agent.handle(event))
        flush()

    sub = bus.subscribe(group, consumer or consumer_name(group), handler, types=agent.types)
    block_ms = max(1, int(tick_s * 1000))
    backoff = 0.1
    while not stop.is_set():
        try:
            sub.poll(block_ms=block_ms)
            outbox.extend(agent.tick(clock()))
            flush()
            backoff = 0.1
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning(
                "%s: lost Redis (%s); %d events to publish; retrying", group, exc, len(outbox)
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
