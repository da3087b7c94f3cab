"""Connection and stream settings: one typed object, built from the environment or
explicit values (after arq's `RedisSettings.from_dsn`), and `connect()`.

`connect()` fixes three redis-py 8 defaults that bit us on real machines:
- the socket timeout (5 s) must stay above the longest BLOCK we issue, else a
  blocking read times out client-side while the server is still waiting;
- redis-py retries timed-out commands (10 times by default): a blocking read was
  silently retried for a minute and an XADD during a server stall was written twice.
  We never retry; callers (and consumers, which dedupe on event id) handle errors;
- RESP3 is the default; we pin RESP2 so replies have one shape on every server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from events import ConfigError

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class TrimPolicy(StrEnum):
    """How the event stream is capped on every XADD (always approximate, `~`)."""

    MAXLEN = "maxlen"  # keep about `maxlen` newest entries
    MINID = "minid"  # keep entries younger than `retention_s`
    NONE = "none"  # never trim (the stream grows until someone trims it)


@dataclass(frozen=True)
class BusSettings:
    """Everything the bus needs to know about Redis and its streams.

    Build with `BusSettings.from_env()` (reads `REDIS_URL`) or
    `BusSettings.from_dsn(url, ...)`; any field can be overridden by keyword.
    """

    url: str = DEFAULT_URL
    prefix: str = "loops"
    trim: TrimPolicy = TrimPolicy.MAXLEN
    maxlen: int = 100_000
    retention_s: float = 7 * 24 * 3600.0
    dead_maxlen: int = 10_000
    max_deliveries: int = 5
    reclaim_idle_ms: int = 60_000
    reclaim_interval_ms: int = 1_000
    block_ms: int = 1_000
    batch: int = 100
    socket_timeout: float | None = None  # None: block_ms + 5 s
    socket_connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if self.maxlen < 1:
            problems.append(f"maxlen must be >= 1 (got {self.maxlen})")
        if self.max_deliveries < 1:
            problems.append(f"max_deliveries must be >= 1 (got {self.max_deliveries})")
        if self.batch < 1:
            problems.append(f"batch must be >= 1 (got {self.batch})")
        if self.block_ms < 0 or self.reclaim_idle_ms < 0 or self.reclaim_interval_ms < 0:
            problems.append("block_ms, reclaim_idle_ms and reclaim_interval_ms must be >= 0")
        if self.socket_timeout is not None and self.socket_timeout * 1000 <= self.block_ms:
            problems.append(
                f"socket_timeout ({self.socket_timeout} s) must be above block_ms ({self.block_ms} ms)"
            )
        if not self.prefix or any(c in self.prefix for c in " {}"):
            problems.append(
                f"prefix must be a non-empty name without spaces or braces: {self.prefix!r}"
            )
        if problems:
            raise ConfigError("bus settings: " + "; ".join(problems))

    @property
    def effective_socket_timeout(self) -> float:
        """The client socket timeout: above the longest BLOCK the bus issues."""
        if self.socket_timeout is not None:
            return self.socket_timeout
        return self.block_ms / 1000 + 5.0

    @classmethod
    def from_dsn(cls, url: str, **overrides: Any) -> BusSettings:
        """Settings for the Redis at `url` (`redis://[:password@]host:port/db`)."""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"invalid Redis URL {url!r}: expected redis://host:port/db (or rediss://, unix://)"
            )
        return cls(url=url, **overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> BusSettings:
        """Settings from `REDIS_URL` (default redis://127.0.0.1:6379/0) and `LOOPS_PREFIX`
        (the key prefix, default `loops`), plus overrides."""
        env = os.environ if env is None else env
        url = overrides.pop("url", None) or env.get("REDIS_URL") or DEFAULT_URL
        if "prefix" not in overrides and env.get("LOOPS_PREFIX"):
            overrides["prefix"] = env["LOOPS_PREFIX"]
        return cls.from_dsn(url, **overrides)

    def with_(self, **changes: Any) -> BusSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def connect(settings_or_url: BusSettings | str | None = None) -> redis.Redis:
    """A redis-py client set up for the bus (RESP2, no retries, timeouts above BLOCK).

    Accepts `BusSettings`, a URL, or None (`BusSettings.from_env()`). The caller owns
    the client and closes it."""
    if settings_or_url is None:
        settings = BusSettings.from_env()
    elif isinstance(settings_or_url, str):
        settings = BusSettings.from_dsn(settings_or_url)
    else:
        settings = settings_or_url
    return redis.Redis.from_url(
        settings.url,
        protocol=2,
        socket_timeout=settings.effective_socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
