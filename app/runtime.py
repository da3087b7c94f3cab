"""What every role process shares: signal handling, presence, and the main loop.

One role runs per process (`loops gate`, `loops worker LOOP`, ...). `run_role` runs
its step until SIGTERM or SIGINT, then returns 0 after the current step finished:
an event is acked only after its handler returned, so stopping between steps loses
nothing. While it runs, the process keeps a *presence* key in Redis,
`{prefix}:presence:{role}:{instance}`, holding a JSON `Presence` with a TTL of three
beat intervals. `loops health ROLE` (the compose health check) and `loops status`
read presences with `alive_roles`; a killed process's presence simply expires.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import redis
from pydantic import BaseModel, ConfigDict, ValidationError

from events import ConfigError

if TYPE_CHECKING:
    from app.metrics import MetricsServer

log = logging.getLogger("loops.runtime")

PRESENCE_TTL_INTERVALS = 3
"""A presence lives this many beat intervals: two missed beats are tolerated."""

DEFAULT_PRESENCE_INTERVAL_S = 5.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Presence(BaseModel):
    """A live role process, as written to `{prefix}:presence:{role}:{instance}`."""

    # Unknown fields are ignored, not refused: during a rolling upgrade an older
    # `loops health` must still see a newer process as alive.
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: str
    instance: str
    pid: int
    host: str
    started: datetime
    last_beat: datetime
    interval_s: float

    @property
    def ttl_s(self) -> float:
        return self.interval_s * PRESENCE_TTL_INTERVALS

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the last beat."""
        return ((now or _utcnow()) - self.last_beat).total_seconds()

    def is_fresh(self, now: datetime | None = None) -> bool:
        """True while the last beat is younger than the TTL (the key may outlive a
        paused Redis clock; the beat time is the truth)."""
        return self.age_s(now) <= self.ttl_s

    def matches(self, role: str) -> bool:
        """`worker` matches every `worker:<loop>`; `worker:loop-1` only that loop."""
        return self.role == role or self.role.startswith(role + ":")


@runtime_checkable
class Poller(Protocol):
    """Anything with `poll(block_ms)`, such as a `bus.api.Subscription`."""

    def poll(self, block_ms: int = 1000) -> int: ...


Step = Callable[[threading.Event], object] | Poller
"""One step of a role. A callable gets the stop event and should return within about
a second when idle (or run until the event is set); a poller is polled with a block."""


def default_instance() -> str:
    """`host:pid`, the same form events use for `Source.instance`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def presence_key(prefix: str, role: str, instance: str) -> str:
    return f"{prefix}:presence:{role}:{instance}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def alive_roles(client: redis.Redis, prefix: str, *, now: datetime | None = None) -> list[Presence]:
    """Every fresh presence under `prefix`, sorted by role and instance.

    Unreadable values are skipped: presence is advisory, never a reason to fail."""
    keys = sorted(client.scan_iter(match=f"{_glob_escape(prefix)}:presence:*", count=500))
    if not keys:
        return []
    found: list[Presence] = []
    for raw in client.mget(keys):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            presence = Presence.model_validate_json(raw)
        except ValidationError:
            continue
        if presence.is_fresh(now):
            found.append(presence)
    return sorted(found, key=lambda p: (p.role, p.instance))


def live_processes(
    client: redis.Redis, prefix: str, role: str | None, *, here: bool, now: datetime
) -> tuple[list[Presence], list[dict[str, Any]]]:
    """The live processes of `role` (all roles when None): role presences, or for `rq`
    and `rq:QUEUE` the rq workers (registered in Redis by rq itself). `here`: only those
    on this host (in a container, the container itself)."""
    if role is not None and (role == "rq" or role.startswith("rq:")):
        from rq import Worker

        queue = role.partition(":")[2]
        workers = [
            {
                "role": f"rq:{','.join(w.queue_names())}",
                "instance": w.name,
                "pid": w.pid,
                "host": w.hostname,
                "last_beat": w.last_heartbeat.isoformat() if w.last_heartbeat else None,
            }
            for w in Worker.all(connection=client)
            if (not queue or queue in w.queue_names())
            and (not here or w.hostname == socket.gethostname())
        ]
        return [], workers
    presences = alive_roles(client, prefix, now=now)
    if here:
        presences = [p for p in presences if p.host == socket.gethostname()]
    return [p for p in presences if role is None or p.matches(role)], []


def _bounded_client(client: redis.Redis, timeout_s: float) -> redis.Redis:
    """A client on the same server whose calls give up after `timeout_s`.

    The heartbeat must never hang behind a stuck socket: a missed beat is the signal
    that something is wrong. Falls back to `client` if its pool cannot be cloned."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = timeout_s
    kwargs["socket_connect_timeout"] = timeout_s
    try:
        clone = type(pool)(connection_class=pool.connection_class, max_connections=2, **kwargs)
    except TypeError:
        return client
    return redis.Redis(connection_pool=clone)


class PresenceBeat:
    """Writes a role's presence now and then every `interval_s` from a daemon thread."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        role: str,
        instance: str,
        interval_s: float = DEFAULT_PRESENCE_INTERVAL_S,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("presence interval must be positive")
        self.interval_s = interval_s
        self.key = presence_key(prefix, role, instance)
        self._client = _bounded_client(client, timeout_s=max(interval_s, 0.5))
        self._owns_client = self._client is not client
        self._role, self._instance = role, instance
        self._started = _utcnow()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def presence(self) -> Presence:
        return Presence(
            role=self._role,
            instance=self._instance,
            pid=os.getpid(),
            host=socket.gethostname(),
            started=self._started,
            last_beat=_utcnow(),
            interval_s=self.interval_s,
        )

    def beat(self) -> None:
        """Write the presence once; raises a redis error if Redis is unreachable."""
        ttl_ms = max(1, int(self.interval_s * PRESENCE_TTL_INTERVALS * 1000))
        self._client.set(self.key, self.presence().model_dump_json(), px=ttl_ms)

    def start(self) -> None:
        """Beat once synchronously (so a role that cannot reach Redis fails at once),
        then keep beating in the background."""
        self.beat()
        self._thread = threading.Thread(
            target=self._run, name=f"presence:{self._role}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                # The presence expires if this keeps failing: that is the health signal.
                log.warning("presence beat for %s failed: %s", self._role, exc)

    def stop(self) -> None:
        """Stop beating and remove the presence (best effort: it expires anyway)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        try:
            self._client.delete(self.key)
        except redis.RedisError as exc:
            log.warning("could not remove presence %s: %s", self.key, exc)
        finally:
            if self._owns_client:
                self._client.close()


def _serve_metrics(
    client: redis.Redis, prefix: str, role: str, host: str, port: int
) -> MetricsServer:
    from app.metrics import serve_metrics
    from bus import RedisBus

    try:
        return serve_metrics(RedisBus(client, prefix), host, port, role=role)
    except OSError as exc:
        raise ConfigError(f"{role}: cannot serve metrics on {host}:{port}: {exc}") from exc


@contextmanager
def graceful_signals(stop: threading.Event, name: str) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`; a second one interrupts at once.

    Handlers can only be installed from the main thread; elsewhere (tests running a
    role in a thread) this does nothing and the caller sets `stop` itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info(
            "%s: %s received, stopping after the current step", name, signal.Signals(signum).name
        )
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_role(
    name: str,
    instance: str | None,
    client: redis.Redis,
    step: Step | Sequence[Step],
    *,
    stop: threading.Event,
    prefix: str = "loops",
    presence_interval_s: float = DEFAULT_PRESENCE_INTERVAL_S,
    poll_block_ms: int = 1000,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run one role in this process until `stop` is set (by SIGTERM/SIGINT or the
    caller); returns 0 after a graceful stop.

    `name` is the presence role: `gate`, `merge`, `monitor`, `pm`, `human`,
    `dashboard`, or `worker:<loop>` for a loop worker. `instance` defaults to
    `host:pid`. `step` may be a sequence (say a subscription and a timer tick): each
    runs in turn, so keep their blocks short. An exception from a step propagates
    (the process exits non-zero and its supervisor restarts it); the presence is
    removed either way. Raises `ConfigError` when Redis is unreachable at the start.
    `metrics` (host, port) serves the system's Prometheus metrics at /metrics while the
    role runs (`app.metrics`); a port that cannot be bound is a `ConfigError`.
    """
    instance = instance or default_instance()
    steps: list[Step] = list(step) if isinstance(step, Sequence) else [step]
    beat = PresenceBeat(client, prefix, name, instance, presence_interval_s)
    with graceful_signals(stop, name):
        try:
            beat.start()
        except redis.RedisError as exc:
            raise ConfigError(f"{name}: cannot reach Redis: {exc}") from exc
        log.info("%s started (instance %s)", name, instance)
        server = None
        try:
            if metrics is not None:
                server = _serve_metrics(client, prefix, name, *metrics)
            while not stop.is_set():
                for one in steps:
                    if stop.is_set():
                        break
                    if isinstance(one, Poller):
                        one.poll(block_ms=poll_block_ms)
                    else:
                        one(stop)
        finally:
            if server is not None:
                server.close()
            beat.stop()
    log.info("%s stopped", name)
    return 0
