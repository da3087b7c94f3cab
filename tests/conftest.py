"""Shared fixtures. Tests wait on state (`wait_until`), never on the clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings

from bus import BusSettings, RedisBus, connect
from infra.embedded import reachable
from tests.fakes.mock_anthropic import MockAnthropic

T = TypeVar("T")

# Timing is not a property we test here; cold imports must not fail a fuzz run.
settings.register_profile(
    "loops", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("loops")

IN_CI = os.environ.get("CI", "").lower() == "true"


def wait_until(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `cond` until it returns a truthy value; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {cond}")
        time.sleep(interval)


# --------------------------------------------------------------------------- Redis backends

REAL_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
_real_redis_error: list[str] = []  # cached: probe the real server once per session


def _probe_real_redis() -> str | None:
    """None when the real Redis answers PING, else why not."""
    if not _real_redis_error:
        client = connect(BusSettings.from_dsn(REAL_REDIS_URL, socket_connect_timeout=1.0))
        try:
            client.ping()
            _real_redis_error.append("")
        except redis.RedisError as exc:
            _real_redis_error.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
    return _real_redis_error[0] or None


def require_real_redis() -> str:
    """The real Redis URL; skips the test when unreachable (fails under CI=true)."""
    problem = _probe_real_redis()
    if problem:
        message = f"real Redis at {REAL_REDIS_URL} unreachable ({problem})"
        if IN_CI:
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return REAL_REDIS_URL


@dataclass
class RedisBackend:
    """One Redis for one test: a client, a key prefix of its own, and (for a real
    server) the URL a subprocess can connect to."""

    name: str  # "fakeredis" (in-process) or "real"
    client: redis.Redis
    prefix: str
    url: str | None  # None for in-process fakeredis

    def settings(self, **overrides: Any) -> BusSettings:
        return BusSettings(url=self.url or REAL_REDIS_URL, prefix=self.prefix, **overrides)

    def bus(self, **overrides: Any) -> RedisBus:
        """A RedisBus on this backend and prefix; `overrides` are BusSettings fields."""
        return RedisBus(self.client, settings=self.settings(**overrides))

    def cleanup(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)


@pytest.fixture(params=["fakeredis", "real"])
def redis_backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    """The bus contract backends: in-process fakeredis (Redis 7.0 flavour) and the real
    Redis at REDIS_URL or 127.0.0.1:6379. Each test gets its own key prefix; its keys
    are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    if request.param == "fakeredis":
        server = fakeredis.FakeServer(version=(7, 0))
        client: redis.Redis = fakeredis.FakeRedis(server=server, protocol=2)
        backend = RedisBackend("fakeredis", client, prefix, None)
    else:
        url = require_real_redis()
        backend = RedisBackend("real", connect(url), prefix, url)
    try:
        yield backend
    finally:
        try:
            backend.cleanup()
        finally:
            backend.client.close()


@pytest.fixture
def bus(redis_backend: RedisBackend) -> RedisBus:
    """A RedisBus with default settings on `redis_backend`, under a unique prefix."""
    return redis_backend.bus()


@pytest.fixture(params=["fakeredis-tcp", "real"])
def fault_upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a Redis reachable over TCP (fakeredis's server, or the real one), to
    put a `tests.faultproxy.FaultProxy` in front of. Tests use their own prefixes."""
    if request.param == "real":
        yield require_real_redis()
        return
    # fakeredis's TCP server without a password (the embedded server always has one,
    # and the proxy's clients know only a URL): `python -m infra.fakeserver` as is.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.fakeserver", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: proc.poll() is None and reachable(url), timeout=15)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def mock_anthropic() -> Iterator[MockAnthropic]:
    """A scripted Messages API on 127.0.0.1 (`tests/fakes/mock_anthropic.py`); script it
    with `mock_anthropic.script([...turns])`, point clients at `mock_anthropic.base_url`."""
    with MockAnthropic() as server:
        yield server
