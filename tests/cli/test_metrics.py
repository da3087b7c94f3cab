"""Prometheus metrics (`app/metrics.py`): every family computed on scrape from the read
model and Redis, on both backends; the dashboard serves them without the token and
without event text; a role process serves them on `--metrics-port` and still stops
with exit 0."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import events as ev
from app import metrics
from app.dashboard import create_app
from bus import RedisBus
from events.view import SystemView
from infra.settings import Settings
from tests.cli.conftest import LOOPS, System
from tests.cli.sample import MON, scenario
from tests.conftest import wait_until

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "tok-metrics-9f8e7d"


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fixed:
    """A view source over a view built once."""

    def __init__(self, view: SystemView) -> None:
        self.view = view

    def read(self, fn: Callable[[SystemView], T]) -> T:
        return fn(self.view)


def history() -> list[ev.Event]:
    """The sample scenario plus an iteration failure, an expired escalation and a
    merge conflict, with secrets where agent text goes."""
    return [
        *scenario(),
        ev.IterationFinished(
            source=MON,
            loop="loop-ui",
            task_id="UI-2",
            iteration=2,
            attempt=2,
            outcome=ev.IterationOutcome.FAILED,
            failure=ev.FailureKind.USAGE_LIMIT,
            failure_detail="limit; key sk-ant-api03-SECRETSECRET",
            duration_s=1.0,
            counted=False,
        ),
        ev.MergeConflicted(
            source=MON,
            loop="loop-ui",
            task_id="UI-3",
            commit="dddd",
            files=["ui/app.js"],
            tries=1,
        ),
    ]


def test_every_family_from_the_stream_and_redis(bus: RedisBus) -> None:
    bus.publish_many(history())
    bus.ensure_group("gate")
    # The gate read two entries and acked none: two pending, the rest lag.
    bus.client.xreadgroup("gate", "g1", {bus.stream: ">"}, count=2)
    view = metrics.TailedView(bus)
    reg = metrics.registry(view, bus.client, bus.prefix, role="gate")
    text = metrics.exposition(reg).decode()
    found = samples(text)

    assert value(found, "loops_loops", state="waiting") == 1
    assert value(found, "loops_loops", state="running") == 1
    assert value(found, "loops_loops", state="paused") == 0
    assert value(found, "loops_loops_by_attention", attention="waiting on a person") == 1
    by_health = {
        dict(k[1])["health"]: v for k, v in found.items() if k[0] == "loops_loops_by_health"
    }
    assert {"healthy", "stale", "dead"} <= set(by_health) and sum(by_health.values()) == 2
    assert value(found, "loops_loop_state", loop="loop-api", state="waiting") == 1
    assert value(found, "loops_tasks", loop="loop-api", status="merged") == 1
    assert value(found, "loops_iterations_total", loop="loop-api", outcome="claimed") == 1
    assert value(found, "loops_iterations_total", loop="loop-ui", outcome="failed") == 1
    assert value(found, "loops_iteration_failures_total", loop="loop-ui", kind="usage_limit") == 1
    assert value(found, "loops_verifications_passed_total", loop="loop-api") == 1
    assert value(found, "loops_verifications_passed_total", loop="loop-ui") == 1
    failed = value(
        found, "loops_verifications_failed_total", loop="loop-ui", verdict="checks_failed"
    )
    assert failed == 1
    assert value(found, "loops_merges_total", loop="loop-api", result="merged") == 1
    assert value(found, "loops_merges_total", loop="loop-ui", result="conflicted") == 1
    assert value(found, "loops_merge_queue_depth") == 1
    assert value(found, "loops_claim_to_merge_seconds_count") == 1
    assert value(found, "loops_claim_to_merge_seconds_bucket", le="+Inf") == 1
    assert value(found, "loops_tokens_total", loop="loop-api", kind="input") == 12000
    assert value(found, "loops_cost_usd_total", loop="loop-api") == 0.42
    assert value(found, "loops_monitor_actions_total", loop="loop-ui", action="reset_task") == 1
    assert value(found, "loops_open_escalations", severity="high") == 1
    assert value(found, "loops_escalations_total", loop="loop-api", kind="question") == 1
    assert value(found, "loops_consumer_group_pending", group="gate", role="gate") == 2
    assert value(found, "loops_consumer_group_consumers", group="gate", role="gate") == 1
    assert value(found, "loops_stream_length") == len(history())
    assert value(found, "loops_dead_letters") == 0
    assert value(found, "loops_redis_up") == 1
    assert value(found, "loops_events_folded_total") == len(history())
    role = [k for k in found if k[0] == "loops_role_info"]
    assert role and ("role", "gate") in role[0][1]
    # No event text reaches the metrics: questions, hints, failure details.
    for text_of_an_agent in ("SECRETSECRET", "404 or 410", "textContent", "boom"):
        assert text_of_an_agent not in text

    # A second scrape folds in only what is new.
    bus.publish(
        ev.MonitorAction(
            source=MON,
            loop="loop-api",
            action=ev.MonitorActionKind.ESCALATE,
            rule="blocked",
            reason="r",
            incident_id="inc-2",
        )
    )
    again = samples(metrics.exposition(reg).decode())
    assert value(again, "loops_monitor_actions_total", loop="loop-api", action="escalate") == 1
    assert value(again, "loops_events_folded_total") == len(history()) + 1


def test_lag_per_group_on_redis_7(bus: RedisBus) -> None:
    bus.publish_many(scenario())
    bus.ensure_group("merge")
    found = samples(
        metrics.exposition(metrics.registry(Fixed(SystemView()), bus.client, bus.prefix)).decode()
    )
    # Both backends are Redis 7 flavoured: XINFO GROUPS has `lag`.
    assert value(found, "loops_consumer_group_lag", group="merge", role="merge") == len(scenario())
    assert value(found, "loops_consumer_group_pending", group="merge", role="merge") == 0


def test_dashboard_serves_metrics_without_the_token(system: System) -> None:
    system.bus.publish_many(history())
    app = create_app(system.bus, TOKEN, allowed_hosts=["testserver", "127.0.0.1"])
    with TestClient(app) as client:
        wait_until(lambda: client.get("/api/view").json()["events_seen"] == len(history()))
        reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(reply.text)
    assert value(found, "loops_verifications_passed_total", loop="loop-api") == 1
    role = [k for k in found if k[0] == "loops_role_info"]
    assert role and ("role", "dashboard") in role[0][1]
    assert TOKEN not in reply.text and "SECRETSECRET" not in reply.text


def test_a_role_process_serves_metrics_on_its_port_and_stops_with_exit_0(
    system: System,
) -> None:
    system.bus.publish_many(scenario())
    port = free_port()
    env = {**system.env, "LOOPS_METRICS_PORT": str(port)}
    proc = subprocess.Popen(
        [LOOPS, "monitor", "--redis", system.url],
        env=env,
        cwd=system.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def scrape() -> str | None:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                return None
            return reply.text if reply.status_code == 200 else None

        text = wait_until(scrape, timeout=30)
        found = samples(text)
        assert value(found, "loops_loops", state="waiting") == 1
        assert value(found, "loops_verifications_passed_total", loop="loop-ui") == 1
        role = [k for k in found if k[0] == "loops_role_info"]
        assert role and ("role", "monitor") in role[0][1]
        # The monitor's own consumer group shows up once it has subscribed.
        wait_until(
            lambda: (
                value(
                    samples(scrape() or ""),
                    "loops_consumer_group_pending",
                    group="monitor",
                    role="monitor",
                )
                is not None
            ),
            timeout=30,
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_metrics_port_is_one_clear_line(system: System) -> None:
    proc = system.loops("monitor", "--metrics-port", "99999", timeout=30)
    assert proc.returncode == 1
    assert "metrics port 99999" in proc.stderr and "Traceback" not in proc.stderr


def test_metrics_are_off_by_default() -> None:
    assert metrics.metrics_address(None, None, Settings()) is None
    assert metrics.metrics_address(
        None, None, Settings.from_env({"LOOPS_METRICS_PORT": "9100"})
    ) == (
        "127.0.0.1",
        9100,
    )
    assert metrics.metrics_address(9101, "0.0.0.0", Settings()) == ("0.0.0.0", 9101)
