"""The spend ledger: what the agents (and the gate's checks and judge) have spent, per
budget scope, in durable state on the bus's Redis.

A scope is what a budget applies to: `task:LOOP/TASK`, `loop:LOOP`, `project`, and
the project's rolling day (hour buckets, `day:HOUR`, summed over the last 24 hours).
Each is one hash, `{prefix}:spend:SCOPE`, with the fields `LINE.METRIC` (`agent.calls`,
`agent.usd`, `verify.wall_s`, ...): a line says who spent it, and a budget counts the
sum of the lines.

A call is counted when it starts, and its figures are added when it ends: `begin`
adds one call to each scope and records the call as open (`{prefix}:spend:open`);
`end` adds its tokens, cost and wall time and closes it (whoever deletes the open
record adds them, so a retry or a reap never counts twice). A
process killed mid-call leaves the call open: its call is counted, its wall time keeps
counting (`spent` adds the open calls' time so far) until `reap` closes it with the
time until the reap. Nothing here under-counts because of a crash.

Budget raises made by a person live here too (`{prefix}:budget:raises`, added to the
configured limit), and the once-only marks of warnings and escalations
(`{prefix}:budget:marks`). The client is passed in, with its socket timeout; nothing
connects here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

METRICS = ("calls", "tokens", "usd", "wall_s")
LINES = ("agent", "verify", "judge")
DAY_BUCKETS = 24  # the rolling day: this hour and the 23 before it
_BUCKET_TTL_S = 2 * 24 * 3600


def hour_of(at: datetime) -> int:
    """The hour bucket (hours since the epoch) that `at` falls in."""
    if at.tzinfo is None:
        raise ValueError(f"a spend time needs a time zone, got {at.isoformat()}")
    return int(at.timestamp() // 3600)


def task_scope(loop: str, task_id: str) -> str:
    return f"task:{loop}/{task_id}"


def loop_scope(loop: str) -> str:
    return f"loop:{loop}"


PROJECT = "project"
DAY = "day"


MAX_FIGURE = 1e12  # one call's figure above this is nonsense: capped (Redis counts in 64 bits)


def clean(value: float | int | None) -> float:
    """A reported figure as the ledger takes it: not a number, infinite, negative or
    missing is 0, and at most `MAX_FIGURE` (an agent's report is untrusted; it can never
    lower a spend, nor overflow a counter)."""
    if value is None:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if not math.isfinite(number) or number < 0:
        return 0.0
    return min(number, MAX_FIGURE)


@dataclass(frozen=True)
class Spend:
    """What a scope has spent: every line summed, open calls' time so far included."""

    calls: int = 0
    tokens: int = 0
    usd: float = 0.0
    wall_s: float = 0.0

    def get(self, metric: str) -> float:
        return float(getattr(self, metric))


class SpendLedger:
    """The spend of one system (one key prefix); see the module docstring."""

    def __init__(self, client: redis.Redis, prefix: str = "loops") -> None:
        self.client = client
        self.prefix = prefix
        self.open_key = f"{prefix}:spend:open"
        self.raises_key = f"{prefix}:budget:raises"
        self.marks_key = f"{prefix}:budget:marks"

    def _key(self, scope: str) -> str:
        return f"{self.prefix}:spend:{scope}"

    def _scopes(self, scopes: Iterable[str], started: datetime) -> list[str]:
        """The hashes a call's figures go to: its scopes, with `day` as its hour bucket."""
        return [f"{DAY}:{hour_of(started)}" if s == DAY else s for s in scopes]

    # ------------------------------------------------------------------ calls
    def begin(
        self, call_id: str, scopes: Iterable[str], started: datetime, *, line: str = "agent"
    ) -> bool:
        """Count one call of `line` in each of `scopes`, and record it as open. False
        when `call_id` is open already (a retry)."""
        keys = self._scopes(scopes, started)
        record = json.dumps({"scopes": keys, "line": line, "started": started.timestamp()})
        if self.client.hexists(self.open_key, call_id):
            return False
        # Counted first, then recorded as open, in one round trip. No MULTI: the embedded
        # redis-server (7.0, default user off) drops MULTI blocks when it reloads its AOF.
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hincrby(self._key(key), f"{line}.calls", 1)
                if key.startswith(f"{DAY}:"):
                    pipe.expire(self._key(key), _BUCKET_TTL_S)
            pipe.hset(self.open_key, call_id, record)
            pipe.execute()
        return True

    def end(
        self,
        call_id: str,
        ended: datetime,
        *,
        tokens: float | int | None = 0,
        usd: float | None = 0.0,
        wall_s: float | None = None,
    ) -> bool:
        """Add a call's figures to the scopes it was counted in, and close it. Invalid
        figures count as 0 (`clean`); wall time is the larger of the reported and the
        measured one. False when the call is not open (ended already, or never begun):
        whoever removes the open record (HDEL is atomic) adds the figures, once."""
        raw = self.client.hget(self.open_key, call_id)
        if raw is None or not self.client.hdel(self.open_key, call_id):
            return False
        record = json.loads(raw)  # type: ignore[arg-type]
        measured = max(ended.timestamp() - float(record["started"]), 0.0)
        wall = max(clean(wall_s), measured)
        line = record["line"]
        with self.client.pipeline(transaction=False) as pipe:
            for key in record["scopes"]:
                name = self._key(key)
                pipe.hincrby(name, f"{line}.tokens", int(clean(tokens)))
                pipe.hincrbyfloat(name, f"{line}.usd", clean(usd))
                pipe.hincrbyfloat(name, f"{line}.wall_s", wall)
            pipe.execute()
        return True

    def record(
        self,
        scopes: Iterable[str],
        at: datetime,
        *,
        line: str,
        call_id: str,
        tokens: float | int | None = 0,
        usd: float | None = 0.0,
        wall_s: float | None = 0.0,
    ) -> None:
        """A call that already ended (a verification run, a judge call): begin and end
        in one go, idempotent on `call_id` (for two days)."""
        started = at - timedelta(seconds=clean(wall_s))
        first = self.client.set(
            f"{self.prefix}:spend:done:{call_id}", "1", nx=True, ex=_BUCKET_TTL_S
        )
        if first and self.begin(call_id, scopes, started, line=line):
            self.end(call_id, at, tokens=tokens, usd=usd, wall_s=wall_s)

    def open_calls(self) -> dict[str, dict[str, Any]]:
        """Every open call: id -> {scopes, line, started (epoch seconds)}."""
        raw: Mapping[Any, Any] = self.client.hgetall(self.open_key)  # type: ignore[assignment]
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def reap(self, scope: str, now: datetime) -> int:
        """Close every open call counted in `scope` (a restarted worker's own calls that
        a crash left open), charging its time until `now`. Returns how many."""
        closed = 0
        for call_id, record in self.open_calls().items():
            if scope in record["scopes"] and self.end(call_id, now):
                closed += 1
        return closed

    # ------------------------------------------------------------------ reading
    def spent(self, scope: str, now: datetime) -> Spend:
        """What `scope` has spent up to `now` (for `day`: the last 24 hour buckets)."""
        if scope == DAY:
            hour = hour_of(now)
            names = [self._key(f"{DAY}:{h}") for h in range(hour - DAY_BUCKETS + 1, hour + 1)]
            keys = {f"{DAY}:{h}" for h in range(hour - DAY_BUCKETS + 1, hour + 1)}
        else:
            names = [self._key(scope)]
            keys = {scope}
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            pipe.hgetall(self.open_key)
            rows: list[Mapping[Any, Any]] = pipe.execute()
        totals = dict.fromkeys(METRICS, 0.0)
        for row in rows[:-1]:
            for field, value in row.items():
                metric = _text(field).partition(".")[2]
                if metric in totals:
                    totals[metric] += clean(float(value))
        for value in rows[-1].values():
            record = json.loads(value)
            if keys & set(record["scopes"]):
                totals["wall_s"] += max(now.timestamp() - float(record["started"]), 0.0)
        return Spend(
            calls=int(totals["calls"]),
            tokens=int(totals["tokens"]),
            usd=totals["usd"],
            wall_s=totals["wall_s"],
        )

    def lines(self, scope: str) -> dict[str, float]:
        """The raw `LINE.METRIC` figures of one scope (not `day`), e.g. for a receipt."""
        raw: Mapping[Any, Any] = self.client.hgetall(self._key(scope))  # type: ignore[assignment]
        return {_text(k): float(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ raises, marks
    def raise_limit(self, scope: str, metric: str, amount: float) -> float:
        """Add `amount` (> 0) to `scope`'s `metric` limit; returns the total raise."""
        if metric not in METRICS:
            raise ValueError(f"unknown budget metric {metric!r}: use {', '.join(METRICS)}")
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(f"a budget raise must be a positive number, got {amount!r}")
        return float(self.client.hincrbyfloat(self.raises_key, f"{scope}|{metric}", amount))

    def raises(self, scope: str) -> dict[str, float]:
        """`metric -> total raise` of one scope."""
        raw: Mapping[Any, Any] = self.client.hgetall(self.raises_key)  # type: ignore[assignment]
        out: dict[str, float] = {}
        for k, v in raw.items():
            name, _, metric = _text(k).rpartition("|")
            if name == scope:
                out[metric] = float(v)
        return out

    def mark_once(self, mark: str) -> bool:
        """True the first time `mark` is set in this system, False after (warn once)."""
        return bool(self.client.hsetnx(self.marks_key, mark, "1"))

    def unmark(self, mark: str) -> None:
        """Forget `mark` (the next `mark_once` is a first time again)."""
        self.client.hdel(self.marks_key, mark)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
