"""Connection and stream settings: one typed object, built from the environment or
explicit values (after arq's `RedisSettings.from_dsn`), and `connect()`.

`connect()` fixes three redis-py 8 defaults that bit us on real machines:
- the socket timeout (5 s) must stay above the longest BLOCK we issue, else a
  blocking read times out client-side while the server is still waiting;
- redis-py retries timed-out commands (10 times by default): a blocking read was
  silently retried for a minute and an XADD during a server stall was written twice.
  We never retry; callers (and consumers, which dedupe on event id) handle errors;
- RESP3 is the default; we pin RESP2 so replies have one shape on every server;
- the default pool is capped at 100 connections and raises "Too many connections"
  past it (at ~93 loops when each loop held a blocking read). We use a `BlockingConnectionPool` of `max_connections`
  (sized by roles: one blocking read per subscription of a process, plus short
  publishes), which waits up to `pool_timeout` for a free connection and then raises
  a `redis.ConnectionError`, the error every role already retries.

Credentials (DESIGN.md invariant 8): `password` authenticates to Redis (also taken
from a `redis://:pw@host` URL or `$LOOPS_REDIS_PASSWORD`); `signing_key` signs every
published event and lets consumers drop forged decisions (see `bus/signing.py`). It
is `$LOOPS_SIGNING_KEY`, else derived from the Redis password, so that one secret
configures both. Neither is ever shown: `repr()` hides them and both are registered
with `events.secrets` so that `redact()` masks them wherever they are printed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from events import ConfigError
from events.secrets import register_secret

log = logging.getLogger("loops.bus")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
# What a role retries with back-off (a server that went away, a pool that stayed full
# for `pool_timeout`); anything else is a bug or a misconfiguration and propagates.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
PASSWORD_ENV = "LOOPS_REDIS_PASSWORD"
SIGNING_KEY_ENV = "LOOPS_SIGNING_KEY"
_DERIVATION = b"coding-loops event signing key v1"


def derive_signing_key(password: str) -> bytes:
    """The signing key of a deployment configured with only a Redis password
    (HMAC-SHA256 of a fixed label under the password): every role that can log in
    derives the same key, so a compose user sets one secret."""
    return hmac.new(password.encode(), _DERIVATION, hashlib.sha256).digest()


def parse_signing_key(text: str) -> bytes:
    """A key as written in `$LOOPS_SIGNING_KEY` or `signing.key`: hex when it is hex,
    else its UTF-8 bytes. At least 16 bytes."""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
    if len(key) < 16:
        raise ConfigError(
            f"the event signing key is too short ({len(key)} bytes, need 16 or more); "
            "make one with `openssl rand -hex 32`"
        )
    return key


def redact_url(url: str) -> str:
    """`url` with its password (if any) shown as `***`, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def url_password(url: str) -> str | None:
    """The password in `url` (`redis://[user]:pw@host`), if any."""
    password = urlsplit(url).password
    return unquote(password) if password else None


class TrimPolicy(StrEnum):
    """How the event stream is capped on every XADD (always approximate, `~`)."""

    MAXLEN = "maxlen"  # keep about `maxlen` newest entries
    MINID = "minid"  # keep entries younger than `retention_s`
    NONE = "none"  # never trim (the stream grows until someone trims it)


@dataclass(frozen=True)
class BusSettings:
    """Everything the bus needs to know about Redis and its streams.

    Build with `BusSettings.from_env(env)` (the variables of `env`, which the CLI's
    `infra.settings.Settings` supplies) or `BusSettings.from_dsn(url, ...)`; any field
    can be overridden by keyword.
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
    # Connections per client (a process's roles share one): blocking reads hold one
    # each (one per subscription, not per loop: see bus/router.py); publishes borrow
    # one briefly. Past it a caller waits up to `pool_timeout`, then ConnectionError.
    max_connections: int = 32
    pool_timeout: float = 30.0
    # Redis password when the URL has none (the embedded server's, $LOOPS_REDIS_PASSWORD)
    password: str | None = field(default=None, repr=False, compare=False)
    # HMAC-SHA256 key events are signed with; None: unsigned and unchecked (bare tests)
    signing_key: bytes | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        # Never the password (in `url` or `password`) or the key: settings get logged.
        return (
            f"BusSettings(url={redact_url(self.url)!r}, prefix={self.prefix!r}, "
            f"trim={self.trim.value}, signed={self.signing_key is not None})"
        )

    def __post_init__(self) -> None:
        register_secret(self.password)
        register_secret(url_password(self.url))
        if self.signing_key is not None:
            register_secret(self.signing_key.hex())
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
        if self.max_connections < 2 or self.pool_timeout <= 0:
            problems.append("max_connections must be >= 2 and pool_timeout > 0")
        if self.signing_key is not None and len(self.signing_key) < 16:
            problems.append("signing_key must be at least 16 bytes")
        if problems:
            raise ConfigError("bus settings: " + "; ".join(problems))

    @property
    def effective_password(self) -> str | None:
        """The password the client logs in with: the URL's, else `password`."""
        return url_password(self.url) or self.password

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
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> BusSettings:
        """Settings from the variables of `env`: `REDIS_URL` (default redis://127.0.0.1:6379/0), `LOOPS_PREFIX`
        (the key prefix, default `loops`), `LOOPS_REDIS_PASSWORD` (when the URL has
        none) and `LOOPS_SIGNING_KEY` (else derived from the password), plus overrides.

        With neither a password nor a key, events are published unsigned and nothing is
        verified (an old setup; roles say so with `warn_if_unsigned`)."""
        url = overrides.pop("url", None) or env.get("REDIS_URL") or DEFAULT_URL
        if "prefix" not in overrides and env.get("LOOPS_PREFIX"):
            overrides["prefix"] = env["LOOPS_PREFIX"]
        if "password" not in overrides:
            overrides["password"] = env.get(PASSWORD_ENV) or None
        if "signing_key" not in overrides:
            # derived from the password the client logs in with (the URL's wins)
            overrides["signing_key"] = key_from_env(env, url_password(url) or overrides["password"])
        return cls.from_dsn(url, **overrides)

    def with_(self, **changes: Any) -> BusSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def key_from_env(env: Mapping[str, str], password: str | None) -> bytes | None:
    """`$LOOPS_SIGNING_KEY`, else the key derived from `password`, else None."""
    text = env.get(SIGNING_KEY_ENV, "").strip()
    if text:
        return parse_signing_key(text)
    if password:
        return derive_signing_key(password)
    return None


def warn_if_unsigned(settings: BusSettings) -> None:
    """One warning line when a role runs without a signing key (a distributed setup
    with neither `$LOOPS_REDIS_PASSWORD` nor `$LOOPS_SIGNING_KEY`)."""
    if settings.signing_key is None:
        log.warning(
            "bus: no %s or %s: events are not signed and forged decisions are not dropped",
            PASSWORD_ENV,
            SIGNING_KEY_ENV,
        )


def connect(settings_or_url: BusSettings | str) -> redis.Redis:
    """A redis-py client set up for the bus (RESP2, no retries, timeouts above BLOCK)
    over a bounded pool that blocks (`max_connections`, `pool_timeout`) instead of
    raising "Too many connections".

    Accepts `BusSettings` or a URL. The caller owns the client and closes it."""
    if isinstance(settings_or_url, str):
        settings = BusSettings.from_dsn(settings_or_url)
    else:
        settings = settings_or_url
    # A password in the URL wins over `password` (redis-py applies the URL's last).
    retry = Retry(NoBackoff(), 0)
    pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        password=settings.password,
        protocol=2,
        socket_timeout=settings.effective_socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        retry=retry,
        retry_on_timeout=False,
        health_check_interval=0,
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: close() closes both
