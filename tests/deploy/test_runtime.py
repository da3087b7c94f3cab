"""The role runtime: presence, graceful stop on SIGTERM, expiry after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
import redis

from app.runtime import (
    PRESENCE_TTL_INTERVALS,
    Presence,
    PresenceBeat,
    alive_roles,
    live_processes,
    presence_key,
    run_role,
)
from bus import BusSettings, connect
from events import ConfigError
from tests.conftest import require_real_redis, wait_until

ROLE_PROC = Path(__file__).with_name("role_proc.py")


@pytest.fixture
def fake() -> Iterator[redis.Redis]:
    client: redis.Redis = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)))
    yield client
    client.close()


@pytest.fixture
def real() -> Iterator[tuple[redis.Redis, str, str]]:
    """A real Redis client, its URL, and a prefix of this test's own."""
    url = require_real_redis()
    client = connect(url)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield client, url, prefix
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _presence(role: str, instance: str, beat_age_s: float, interval_s: float = 5.0) -> Presence:
    now = datetime.now(UTC)
    return Presence(
        role=role,
        instance=instance,
        pid=1,
        host="h",
        started=now - timedelta(minutes=1),
        last_beat=now - timedelta(seconds=beat_age_s),
        interval_s=interval_s,
    )


def test_alive_roles_keeps_fresh_presences_only(fake: redis.Redis) -> None:
    for p in (
        _presence("merge", "b", 1),
        _presence("gate", "a", 2),
        _presence("pm", "old", 16),  # older than 3 intervals of 5 s
    ):
        fake.set(presence_key("px", p.role, p.instance), p.model_dump_json())
    fake.set("px:presence:junk:x", b"not json")
    fake.set(presence_key("other", "gate", "z"), _presence("gate", "z", 0).model_dump_json())

    alive = alive_roles(fake, "px")

    assert [(p.role, p.instance) for p in alive] == [("gate", "a"), ("merge", "b")]


def test_role_names_match_by_family() -> None:
    worker = _presence("worker:loop-1", "i", 0)
    assert worker.matches("worker")
    assert worker.matches("worker:loop-1")
    assert not worker.matches("worker:loop-10")
    assert not _presence("workers", "i", 0).matches("worker")


def test_live_processes_of_a_role_or_of_rq(fake: redis.Redis) -> None:
    from rq import Worker

    for p in (_presence("worker:loop-1", "a", 1), _presence("gate", "b", 1)):
        fake.set(presence_key("px", p.role, p.instance), p.model_dump_json())
    Worker(["loops-verify"], connection=fake, name="rq-1").register_birth()
    now = datetime.now(UTC)

    def live(role: str | None, here: bool = False) -> list[str]:
        presences, workers = live_processes(fake, "px", role, here=here, now=now)
        return [p.instance for p in presences] + [w["instance"] for w in workers]

    assert live(None) == ["b", "a"] and live("worker") == ["a"]
    assert live("worker", here=True) == []  # its host is "h", not this one
    assert live("rq") == live("rq:loops-verify") == live("rq:loops-verify", here=True) == ["rq-1"]
    assert live("rq:loops-agents") == []


def test_presence_has_ttl_of_three_intervals(fake: redis.Redis) -> None:
    beat = PresenceBeat(fake, "px", "gate", "inst", interval_s=2.0)
    beat.beat()
    stored = json.loads(fake.get(beat.key) or b"")
    assert {"role", "instance", "pid", "host", "started", "last_beat"} <= stored.keys()
    assert stored["pid"] == os.getpid()
    assert 0 < fake.pttl(beat.key) <= 2000 * PRESENCE_TTL_INTERVALS


class CountingPoller:
    """A Subscription-like poller that asks to stop after `limit` polls."""

    def __init__(self, stop: threading.Event, limit: int) -> None:
        self.stop, self.limit, self.polls = stop, limit, 0
        self.release = threading.Event()

    def poll(self, block_ms: int = 1000) -> int:
        self.polls += 1
        if self.polls == 1:
            self.release.wait(5)  # hold the first poll until the test saw the presence
        if self.polls >= self.limit:
            self.stop.set()
        return 0


def test_run_role_polls_until_stopped_and_removes_presence(fake: redis.Redis) -> None:
    stop = threading.Event()
    poller = CountingPoller(stop, limit=3)
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_role(
                "monitor", "m1", fake, poller, stop=stop, prefix="px", presence_interval_s=0.05
            )
        )
    )
    thread.start()
    alive = wait_until(lambda: alive_roles(fake, "px"))
    assert [(p.role, p.instance) for p in alive] == [("monitor", "m1")]
    poller.release.set()
    thread.join(10)

    assert result == [0]
    assert poller.polls == 3
    assert fake.exists(presence_key("px", "monitor", "m1")) == 0


def test_run_role_runs_several_steps_in_turn(fake: redis.Redis) -> None:
    stop = threading.Event()
    poller = CountingPoller(stop, limit=2)
    poller.release.set()
    ticks: list[int] = []

    def tick(stop: threading.Event) -> None:
        ticks.append(poller.polls)

    assert run_role("human", "h", fake, [poller, tick], stop=stop, prefix="px") == 0
    assert ticks == [1]  # poll 1, tick, poll 2 (sets stop): the tick after it is skipped
    assert poller.polls == 2


def test_run_role_without_redis_fails_with_one_clear_error() -> None:
    client = connect(BusSettings(url="redis://127.0.0.1:1/0", socket_connect_timeout=1))
    with pytest.raises(ConfigError, match=r"^gate: cannot reach Redis: .*127\.0\.0\.1:1"):
        run_role("gate", None, client, lambda stop: None, stop=threading.Event())
    client.close()


def test_run_role_propagates_a_crash_and_removes_presence(fake: redis.Redis) -> None:
    def step(stop: threading.Event) -> None:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        run_role("pm", "p1", fake, step, stop=threading.Event(), prefix="px")
    assert alive_roles(fake, "px") == []


def _start(url: str, prefix: str, role: str, interval_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROLE_PROC), url, prefix, role, str(interval_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=10)
    return out


def test_sigterm_finishes_the_current_event_then_exits_0(
    real: tuple[redis.Redis, str, str],
) -> None:
    client, url, prefix = real
    proc = _start(url, prefix, "gate", 0.2)
    try:
        alive = wait_until(lambda: alive_roles(client, prefix))
        assert [(p.role, p.pid) for p in alive] == [("gate", proc.pid)]

        client.rpush(f"{prefix}:inbox", "event-1")
        wait_until(lambda: client.get(f"{prefix}:started") == b"1")
        proc.send_signal(signal.SIGTERM)
        # Still handling the event: its presence stays while it works.
        assert alive_roles(client, prefix)
        client.rpush(f"{prefix}:finish", "go")

        assert proc.wait(timeout=10) == 0, _stop(proc)
        assert client.get(f"{prefix}:done") == b"1"
        assert alive_roles(client, prefix) == []
        assert list(client.scan_iter(match=f"{prefix}:presence:*")) == []
    finally:
        _stop(proc)


def test_presence_expires_after_sigkill(real: tuple[redis.Redis, str, str]) -> None:
    client, url, prefix = real
    proc = _start(url, prefix, "worker:loop-1", 0.2)
    try:
        alive = wait_until(lambda: alive_roles(client, prefix))
        key = presence_key(prefix, "worker:loop-1", alive[0].instance)
        proc.kill()
        proc.wait(timeout=10)

        # No goodbye from a killed process: the key outlives it, then its TTL ends it.
        wait_until(lambda: client.exists(key) == 0, timeout=10)
        assert alive_roles(client, prefix) == []
    finally:
        _stop(proc)
