"""The thin loop that runs an agent on a bus: subscribe, handle, publish, tick.

All decisions are in the agents' `handle(event)` and `tick(now)`; this only moves
events. It is what `loops monitor|pm|human` call (group = role name).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from bus import Bus
from events import Event, utcnow


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

    A handler that raises leaves its event pending for redelivery (the bus's rule);
    a tick that raises ends the run, and the supervisor restarts the role."""
    if warm_up_since is None:
        warm_up_since = agent.warm_up_window
    if warm_up_since is False:
        warm_up_since = None
    if isinstance(warm_up_since, timedelta):
        warm_up_since = clock() - warm_up_since
    if warm_up_since is not None:
        warm_up(agent, bus, warm_up_since)

    def handler(event: Event) -> None:
        out = agent.handle(event)
        if out:
            bus.publish_many(out)

    sub = bus.subscribe(group, consumer or consumer_name(group), handler, types=agent.types)
    block_ms = max(1, int(tick_s * 1000))
    while not stop.is_set():
        sub.poll(block_ms=block_ms)
        out = agent.tick(clock())
        if out:
            bus.publish_many(out)
