"""Reclaim after a consumer process is killed with SIGKILL (invariants 2 and 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from events import Event
from tests.bus.helpers import hint, numbers
from tests.conftest import RedisBackend, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_events_of_a_killed_consumer_are_reclaimed_by_another(tcp_backend: RedisBackend) -> None:
    bus = tcp_backend.bus(reclaim_idle_ms=300, reclaim_interval_ms=50)
    assert tcp_backend.url is not None
    bus.publish_many([hint(i) for i in range(20)])
    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.bus.consumer_proc",
            tcp_backend.url,
            bus.prefix,
            "g",
            "victim",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        seen_key = f"{bus.prefix}:seen:victim"
        # the victim is inside the handler of event 5, with its whole batch unacked
        wait_until(lambda: tcp_backend.client.llen(seen_key) == 6, timeout=30)
        assert bus.client.xpending(bus.stream, "g")["pending"] == 20
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    assert victim.returncode == -signal.SIGKILL

    got: list[Event] = []
    rescuer = bus.subscribe("g", "rescuer", got.append)
    wait_until(lambda: rescuer.poll(block_ms=50) is not None and len(got) >= 20, timeout=30)
    assert sorted(numbers(got)) == list(range(20))  # every event, each once, by the rescuer
    assert rescuer.stats.reclaimed == 20
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0
    # the victim handled 0..5 before it died: at least once, never lost
    seen = [int(x) for x in tcp_backend.client.lrange(f"{bus.prefix}:seen:victim", 0, -1)]
    assert seen == list(range(6))
