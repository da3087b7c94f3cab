"""Prometheus metrics: what `/metrics` serves, on the dashboard and on role processes.

Nothing is counted inside the roles. A `SystemCollector` computes every family when
Prometheus scrapes, from the one read model of the stream (`events.view.SystemView`) and
a few Redis reads (XINFO GROUPS for consumer-group lag and pending counts, XLEN for
dead letters), so each process's numbers are the system's, whichever process serves
them. The dashboard lends its live view (`Feed`); a role process keeps a `TailedView`
that folds in only what is new at each scrape, within a time budget.

The metrics carry loop names, states and counts, never event text (questions,
reasons, replies): nothing an agent or a check printed can reach them, so no secret.

Counters start from what the stream still holds when the process starts (the stream
may be trimmed); Prometheus's `rate()` and `increase()` take such resets in stride.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import events as ev
from bus import RedisBus
from events.view import Attention, Health, MergeStatus, SystemView, TaskStatus
from infra.settings import Settings

__all__ = [
    "CONTENT_TYPE",
    "METRICS_HOST_ENV",
    "METRICS_PORT_ENV",
    "MetricsServer",
    "SystemCollector",
    "TailedView",
    "ViewSource",
    "exposition",
    "registry",
    "serve_metrics",
]

log = logging.getLogger("loops.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format: every Prometheus server reads it (our names are plain)."""
METRICS_PORT_ENV = "LOOPS_METRICS_PORT"
METRICS_HOST_ENV = "LOOPS_METRICS_HOST"
SCRAPE_BUDGET_S = 2.0
"""At most this long folding new events into a role's view per scrape; the rest waits
for the next scrape, so a scrape after a long absence stays bounded."""

T = TypeVar("T")


class ViewSource(Protocol):
    """A `SystemView` that can be read consistently: `read(fn)` calls `fn` with the
    current view while nobody changes it and returns what `fn` returned."""

    def read(self, fn: Callable[[SystemView], T]) -> T: ...


class TailedView:
    """A `SystemView` of `bus`'s stream, brought up to date on each `read`: only the
    events since the last read are folded in, for at most `budget_s` seconds."""

    def __init__(self, bus: RedisBus, budget_s: float = SCRAPE_BUDGET_S) -> None:
        self.bus = bus
        self.budget_s = budget_s
        self.view = SystemView()
        self.cursor = "0-0"
        self._lock = threading.Lock()

    def catch_up(self) -> int:
        """Fold in new events until none are left or the budget is spent; returns how
        many were read."""
        deadline = time.monotonic() + self.budget_s
        read = 0
        while time.monotonic() < deadline:
            batch = self.bus.tail(after=self.cursor, block_ms=0, count=1000)
            if not batch:
                break
            for stream_id, event in batch:
                self.view.apply(event, stream_id)
                self.cursor = stream_id
            read += len(batch)
        return read

    def read(self, fn: Callable[[SystemView], T]) -> T:
        with self._lock:
            try:
                self.catch_up()
            except redis.RedisError as exc:  # serve what we have; loops_redis_up says why
                log.warning("metrics: reading the stream failed: %s", exc)
            return fn(self.view)


# ---------------------------------------------------------------------- the families


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _per_loop(family: CounterMetricFamily, table: dict[str, dict[str, int]]) -> CounterMetricFamily:
    for loop, row in sorted(table.items()):
        for key, value in sorted(row.items()):
            family.add_metric([loop, key], value)
    return family


def view_families(view: SystemView) -> list[Metric]:
    """Every family that comes from the read model (pure: no Redis, no clock but the
    health judgement's)."""
    view.refresh()
    loops = view.loops.values()
    out: list[Metric] = []

    by_state = GaugeMetricFamily("loops_loops", "Loops by state.", labels=["state"])
    for status in ev.LoopStatus:
        by_state.add_metric([status.value], sum(lp.status is status for lp in loops))
    out.append(by_state)

    health = GaugeMetricFamily(
        "loops_loops_by_health", "Loops by heartbeat health.", labels=["health"]
    )
    always = {Health.HEALTHY, Health.STALE, Health.DEAD}
    for judged in sorted({lp.health for lp in loops} | always):
        health.add_metric([judged.value], sum(lp.health is judged for lp in loops))
    out.append(health)

    attention = GaugeMetricFamily(
        "loops_loops_by_attention",
        "Loops by what they need (blocked, waiting on a person, silent, failing, ...).",
        labels=["attention"],
    )
    for group in Attention:
        attention.add_metric([group.value], sum(lp.attention is group for lp in loops))
    out.append(attention)

    state = GaugeMetricFamily(
        "loops_loop_state", "1 for each loop's current state.", labels=["loop", "state"]
    )
    tasks = GaugeMetricFamily("loops_tasks", "Tasks by loop and status.", labels=["loop", "status"])
    tokens = _counter("loops_tokens", "Tokens used by each loop's agent.", ["loop", "kind"])
    cost = _counter("loops_cost_usd", "What each loop's agent cost, in US dollars.", ["loop"])
    for lp in sorted(loops, key=lambda x: x.name):
        state.add_metric([lp.name, lp.status.value], 1)
        for task_status in TaskStatus:
            tasks.add_metric(
                [lp.name, task_status.value],
                sum(t.status is task_status for t in lp.tasks.values()),
            )
        for kind in ("input", "output", "cache_read", "cache_write"):
            tokens.add_metric([lp.name, kind], getattr(lp.tokens, kind))
        cost.add_metric([lp.name], lp.cost_usd)
    out += [state, tasks, tokens, cost]

    counts = view.counts
    out.append(
        _per_loop(
            _counter("loops_iterations", "Agent iterations by outcome.", ["loop", "outcome"]),
            counts.iterations,
        )
    )
    out.append(
        _per_loop(
            _counter(
                "loops_iteration_failures", "Failed agent runs by failure kind.", ["loop", "kind"]
            ),
            counts.failures,
        )
    )
    passed = _counter("loops_verifications_passed", "Claims the gate verified.", ["loop"])
    failed = _counter(
        "loops_verifications_failed", "Claims the gate rejected, by verdict.", ["loop", "verdict"]
    )
    for loop, row in sorted(counts.verifications.items()):
        for verdict, value in sorted(row.items()):
            if verdict == ev.VerificationVerdict.PASSED.value:
                passed.add_metric([loop], value)
            else:
                failed.add_metric([loop, verdict], value)
    out += [passed, failed]
    out.append(
        _per_loop(
            _counter(
                "loops_merges", "Merge queue outcomes (merged, conflicted).", ["loop", "result"]
            ),
            counts.merges,
        )
    )
    queue = view.merge_queue()
    depth = GaugeMetricFamily(
        "loops_merge_queue_depth", "Verified commits waiting in the merge queue (with the head)."
    )
    depth.add_metric([], len(queue))
    out.append(depth)
    merging = GaugeMetricFamily("loops_merge_queue_merging", "1 while the queue's head merges.")
    merging.add_metric([], sum(m.status is MergeStatus.MERGING for m in queue))
    out.append(merging)

    hist = counts.claim_to_merge
    cumulative, buckets = 0, []
    for bound, n in zip([*hist.bounds, float("inf")], hist.counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else _bound(bound), float(cumulative)))
    out.append(
        HistogramMetricFamily(
            "loops_claim_to_merge_seconds",
            "Time from an agent's claim to its verified commit merging into main.",
            buckets=buckets,
            sum_value=hist.sum,
        )
    )
    out.append(
        _per_loop(
            _counter("loops_monitor_actions", "Monitor actions by kind.", ["loop", "action"]),
            counts.monitor_actions,
        )
    )
    out.append(
        _per_loop(
            _counter("loops_escalations", "Escalations raised, by kind.", ["loop", "kind"]),
            counts.escalations,
        )
    )
    open_ = GaugeMetricFamily(
        "loops_open_escalations", "Escalations waiting for a person.", labels=["severity"]
    )
    pending = view.open_escalations()
    for severity in ev.Severity:
        open_.add_metric([severity.value], sum(e.severity is severity for e in pending))
    out.append(open_)
    seen = CounterMetricFamily("loops_events_folded", "Events folded into this process's view.")
    seen.add_metric([], view.events_seen)
    out.append(seen)
    return out


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def redis_families(client: redis.Redis, prefix: str) -> list[Metric]:
    """Consumer groups (lag, pending, consumers per group), stream length and dead
    letters, read from Redis; `loops_redis_up` is 0 when Redis did not answer."""
    up = GaugeMetricFamily("loops_redis_up", "1 when this scrape could read Redis.")
    lag = GaugeMetricFamily(
        "loops_consumer_group_lag",
        "Stream entries not yet delivered to the group (XINFO GROUPS lag).",
        labels=["group", "role"],
    )
    pending = GaugeMetricFamily(
        "loops_consumer_group_pending",
        "Entries delivered to the group but not acked yet.",
        labels=["group", "role"],
    )
    consumers = GaugeMetricFamily(
        "loops_consumer_group_consumers", "Consumers in the group.", labels=["group", "role"]
    )
    length = GaugeMetricFamily("loops_stream_length", "Entries in the event stream.")
    dead = GaugeMetricFamily("loops_dead_letters", "Entries in the dead-letter stream.")
    r: Any = client
    stream = f"{prefix}:events"
    try:
        groups = r.xinfo_groups(stream) if r.exists(stream) else []
        length.add_metric([], r.xlen(stream))
        dead.add_metric([], r.xlen(f"{prefix}:dead"))
    except redis.RedisError as exc:
        log.warning("metrics: reading Redis failed: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    for group in groups:
        name = _text(group.get("name", ""))
        role = name.split(":", 1)[0]
        if role == "workers":  # a process's loops behind one Router (bus/router.py)
            role = "worker"
        if group.get("lag") is not None:  # Redis 7; None when it cannot tell
            lag.add_metric([name, role], float(group["lag"]))
        pending.add_metric([name, role], float(group.get("pending") or 0))
        consumers.add_metric([name, role], float(group.get("consumers") or 0))
    return [up, lag, pending, consumers, length, dead]


class SystemCollector(Collector):
    """Every `loops_*` family, computed on scrape from `source` and Redis."""

    def __init__(
        self, source: ViewSource, client: redis.Redis, prefix: str, role: str | None = None
    ) -> None:
        self.source = source
        self.client = client
        self.prefix = prefix
        self.role = role

    def collect(self) -> Iterator[Metric]:
        yield from self.source.read(view_families)
        yield from redis_families(self.client, self.prefix)
        if self.role is not None:
            info = GaugeMetricFamily(
                "loops_role_info", "The role this process runs.", labels=["role", "host", "pid"]
            )
            info.add_metric([self.role, socket.gethostname(), str(os.getpid())], 1)
            yield info


def registry(
    source: ViewSource, client: redis.Redis, prefix: str, role: str | None = None
) -> CollectorRegistry:
    """A registry holding only the system collector (no process-global state)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SystemCollector(source, client, prefix, role))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format."""
    return generate_latest(reg)


class MetricsServer:
    """`/metrics` of a role process on its own port (prometheus_client's HTTP server
    in a daemon thread); `close()` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(bus: RedisBus, host: str, port: int, role: str | None = None) -> MetricsServer:
    """Serve the system's metrics for a role process on host:port (0: a free port)."""
    reg = registry(TailedView(bus), bus.client, bus.prefix, role)
    server, thread = start_http_server(port, addr=host, registry=reg)
    log.info("%s: metrics on http://%s:%d/metrics", role or "loops", host, server.server_address[1])
    return MetricsServer(server, thread)


def metrics_address(
    port: int | None, host: str | None, settings: Settings
) -> tuple[str, int] | None:
    """Where a role serves /metrics: `--metrics-port` / `$LOOPS_METRICS_PORT` (off when
    neither is set), on `--metrics-host` / `$LOOPS_METRICS_HOST` (default 127.0.0.1)."""
    if port is None:
        raw = (settings.metrics_port or "").strip()
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            raise ev.ConfigError(f"${METRICS_PORT_ENV}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ev.ConfigError(f"metrics port {port} is out of range (0-65535)")
    return (host or settings.metrics_host or "127.0.0.1"), port
