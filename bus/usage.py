"""Usage windows: one record per account of when its usage or rate limit resets.

A usage limit belongs to an account, not to a loop: when one loop's agent is told
"limit reached, resets at 15:00", every loop on the same account must wait until
15:00, or each of them spends a call to learn the same thing. The record is a sorted
set on the bus's Redis, `{prefix}:usage-windows`: member = account key, score = the
reset time (epoch seconds). `ZADD GT` keeps the later of two resets in one atomic
command, so two loops recording at once never shorten a window.

"Same account" = same runner kind + same credentials or config dir. `account_key`
hashes those; the secret itself is never stored, logged or published.

The client is passed in (with its socket timeout); nothing connects here.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from events import utcnow

MAX_WINDOW = timedelta(days=8)  # a reset further ahead is a parsing bug; cap it


def account_key(
    runner: str,
    *,
    secret: str | None = None,
    config_dir: str | Path | None = None,
    base_url: str | None = None,
    name: str | None = None,
) -> str:
    """The account a runner calls, as `runner:hash` (16 hex chars of BLAKE2b over the
    runner kind and whichever of `secret` (an API key or token), `config_dir` (e.g.
    `CLAUDE_CONFIG_DIR`, `~/.claude` when unset: a logged-in CLI's account lives there)
    and `base_url` apply). `name`: an explicit account name from the loop's config,
    which replaces the credentials in the hash (loops that name the same account share
    one window). Never the secret itself."""
    if not runner or ":" in runner:
        raise ValueError(f"runner kind must be a plain name, got {runner!r}")
    parts: list[str] = [runner]
    if name:
        parts.append(f"name={name}")
    else:
        if secret:
            parts.append(f"secret={secret}")
        if config_dir is not None:
            resolved = Path(os.path.expanduser(str(config_dir))).resolve()
            parts.append(f"dir={resolved}")
        if base_url:
            parts.append(f"url={base_url.rstrip('/')}")
    digest = hashlib.blake2b(
        "\0".join(parts).encode("utf-8"), digest_size=8, person=b"loops-account"
    ).hexdigest()
    return f"{runner}:{digest}"


def _epoch(at: datetime) -> float:
    if at.tzinfo is None:
        raise ValueError(f"a reset time needs a time zone, got {at.isoformat()}")
    return at.timestamp()


def _when(score: Any) -> datetime:
    return datetime.fromtimestamp(float(score), UTC)


class UsageWindows:
    """The account-wide usage windows of one system (one key prefix).

    A worker calls `until(account)` before every agent call and waits while it returns
    a time; when its agent reports a limit it calls `record(account, reset_at)`."""

    def __init__(self, client: redis.Redis, prefix: str = "loops") -> None:
        self.client = client
        self.key = f"{prefix}:usage-windows"

    def record(self, account: str, reset_at: datetime, *, now: datetime | None = None) -> datetime:
        """Note that `account` is limited until `reset_at` (capped at `MAX_WINDOW` from
        `now`). An earlier reset never shortens a recorded one. Returns the account's
        reset time after the write."""
        _epoch(reset_at)  # refuses a naive time before comparing it
        now = now or utcnow()
        at = min(reset_at, now + MAX_WINDOW)
        self.client.zadd(self.key, {account: _epoch(at)}, gt=True)
        score = self.client.zscore(self.key, account)
        return at if score is None else _when(score)

    def until(self, account: str, *, now: datetime | None = None) -> datetime | None:
        """When `account` may be called again; None when it may be called now."""
        now = now or utcnow()
        score = self.client.zscore(self.key, account)
        if score is None:
            return None
        at = _when(score)
        return at if at > now else None

    def wait_s(self, account: str, *, now: datetime | None = None) -> float:
        """Seconds to wait before calling `account` (0.0: call now)."""
        now = now or utcnow()
        at = self.until(account, now=now)
        return 0.0 if at is None else (at - now).total_seconds()

    def open(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Every account still limited at `now` -> its reset time (status, dashboard).
        Windows that ended are removed on the way."""
        now = now or utcnow()
        stamp = _epoch(now)
        self.client.zremrangebyscore(self.key, "-inf", stamp)
        rows: list[Any] = self.client.zrangebyscore(self.key, f"({stamp}", "+inf", withscores=True)  # type: ignore[assignment]
        return {(k.decode("utf-8") if isinstance(k, bytes) else str(k)): _when(v) for k, v in rows}

    def clear(self, account: str) -> None:
        """Forget `account`'s window (an operator who knows the limit was lifted)."""
        self.client.zrem(self.key, account)
