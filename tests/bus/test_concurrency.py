"""Consumers of one group share the work: disjoint, nothing lost, nothing twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from events import Event, TaskHint
from tests.bus.helpers import hint
from tests.conftest import RedisBackend, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _run_consumers(
    backend: RedisBackend, n_events: int, n_consumers: int
) -> tuple[dict[str, list[int]], int]:
    """Publish `n_events` while `n_consumers` threads consume them in group `g`;
    returns what each consumer handled and the group's pending count at the end."""
    bus = backend.bus()
    handled: dict[str, list[int]] = {f"c{i}": [] for i in range(n_consumers)}
    total = Counter[str]()
    lock = threading.Lock()
    stop = threading.Event()
    threads = []
    for name in handled:

        def handler(event: Event, name: str = name) -> None:
            assert isinstance(event, TaskHint)
            handled[name].append(int(event.text))
            with lock:
                total["n"] += 1

        sub = bus.subscribe("g", name, handler)
        threads.append(threading.Thread(target=sub.run, args=(stop, 100), daemon=True))
    for t in threads:
        t.start()
    try:
        for start in range(0, n_events, 500):
            bus.publish_many([hint(i) for i in range(start, min(start + 500, n_events))])
        wait_until(lambda: total["n"] >= n_events, timeout=90)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    return handled, bus.client.xpending(bus.stream, "g")["pending"]


def test_concurrent_consumers_receive_disjoint_events(redis_backend: RedisBackend) -> None:
    handled, pending = _run_consumers(redis_backend, 400, 4)
    sets = [set(v) for v in handled.values()]
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            assert not a & b
    assert set().union(*sets) == set(range(400))
    assert pending == 0


def test_no_loss_and_no_duplicates_across_10000_events_with_4_consumers(
    redis_backend: RedisBackend,
) -> None:
    handled, pending = _run_consumers(redis_backend, 10_000, 4)
    everything = [n for numbers in handled.values() for n in numbers]
    assert len(everything) == 10_000
    assert sorted(everything) == list(range(10_000))
    assert pending == 0
    # each consumer sees its share in stream order
    for numbers in handled.values():
        assert numbers == sorted(numbers)


def test_no_loss_and_no_duplicates_with_4_consumer_processes(
    tcp_backend: RedisBackend, tmp_path: Path
) -> None:
    bus = tcp_backend.bus()
    bus.ensure_group("g")
    assert tcp_backend.url is not None
    outs = [tmp_path / f"c{i}.txt" for i in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bus.count_proc",
                tcp_backend.url,
                bus.prefix,
                "g",
                f"c{i}",
                str(out),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for i, out in enumerate(outs)
    ]
    try:
        for start in range(0, 10_000, 500):
            bus.publish_many([hint(i) for i in range(start, start + 500)])
        client = tcp_backend.client
        wait_until(lambda: int(client.get(f"{bus.prefix}:handled") or 0) >= 10_000, timeout=90)
        client.set(f"{bus.prefix}:stop", 1)
        for p in procs:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    handled = [[int(x) for x in out.read_text().split()] for out in outs]
    everything = [n for numbers in handled for n in numbers]
    assert sorted(everything) == list(range(10_000))  # no loss, no duplicate
    assert all(numbers == sorted(numbers) for numbers in handled)
    assert bus.client.xpending(bus.stream, "g")["pending"] == 0
