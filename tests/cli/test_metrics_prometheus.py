"""A real Prometheus server (Debian's `prometheus`) scrapes a running `loops up --serve`
on the demo project, and its HTTP API answers with the system's series: loops by
state, verifications passed and failed, merges and the claim-to-merge histogram,
consumer groups, dead letters. Locally a missing `prometheus` skips; under CI=true it
fails (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import demo
from bus.router import router_group
from tests.conftest import IN_CI, wait_until

LOOPS = str(Path(sys.executable).parent / "loops")


def clean_env() -> dict[str, str]:
    """No Redis, prefix or API key from the caller: the embedded bus, scripted agents."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOOPS_", "ANTHROPIC_")) and k != "REDIS_URL"
    }


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is not installed (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, port: int) -> None:
        self.api = f"http://127.0.0.1:{port}/api/v1"

    def query(self, promql: str) -> list[dict[str, object]]:
        reply = httpx.get(f"{self.api}/query", params={"query": promql}, timeout=10)
        body = reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of `promql`, or None while it has no series."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.communicate(timeout=60)[0] or ""
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0] or ""


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`loops up --serve` on the demo project (embedded bus), its dashboard on a free port."""
    root = demo.create(tmp_path / "demo")
    port = free_port()
    proc = subprocess.Popen(
        [LOOPS, "up", str(root), "--serve", "--port", str(port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield port, proc
    finally:
        out = _stop(proc)
        assert proc.returncode is not None, out


@pytest.fixture
def prometheus(tmp_path: Path, system: tuple[int, subprocess.Popen[str]]) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    target, _ = system
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: coding-loops\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Prometheus(port)

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.2)
        yield server
    finally:
        _stop(proc, signal.SIGTERM)


def test_prometheus_scrapes_loops_up_and_answers_with_the_series(
    prometheus: Prometheus, system: tuple[int, subprocess.Popen[str]]
) -> None:
    _, loops_up = system

    def up() -> bool:
        assert loops_up.poll() is None, loops_up.communicate()[0]
        return prometheus.value('up{job="coding-loops"}') == 1

    wait_until(up, timeout=60, interval=0.5)
    # The demo: loop-2's false claim fails verification, then its fix merges; loop-1 merges.
    wait_until(
        lambda: (
            (
                prometheus.value(
                    'loops_verifications_failed_total{loop="loop-2-false-claim",verdict="checks_failed"}'
                )
                or 0
            )
            >= 1
            and (prometheus.value('sum(loops_merges_total{result="merged"})') or 0) >= 2
        ),
        timeout=120,
        interval=0.5,
    )
    assert prometheus.value("sum(loops_loops)") == 4
    assert (prometheus.value('loops_verifications_passed_total{loop="loop-1-clean"}') or 0) >= 1
    assert (prometheus.value("loops_claim_to_merge_seconds_count") or 0) >= 2
    assert prometheus.value('loops_iterations_total{loop="loop-1-clean",outcome="claimed"}')
    assert prometheus.value('loops_tokens_total{loop="loop-1-clean",kind="input"}') is not None
    groups = {
        str(series["metric"]["group"])  # type: ignore[index]
        for series in prometheus.query("loops_consumer_group_pending")
    }
    # `loops up` reads the stream once for all its loops: one group (bus.Router).
    workers = router_group(
        ["loop-1-clean", "loop-2-false-claim", "loop-3-stuck", "loop-4-question"]
    )
    assert {"gate", "merge", "monitor", "pm", "human", workers} <= groups
    assert prometheus.value('count(loops_consumer_group_lag{role="worker"})') == 1
    assert prometheus.value("loops_dead_letters") == 0
    assert prometheus.value("loops_redis_up") == 1
    assert prometheus.value("loops_merge_queue_depth") is not None
    assert prometheus.query("loops_open_escalations")
