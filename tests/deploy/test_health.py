"""`loops health`, the command compose health checks run, driven as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.runtime import PresenceBeat
from bus import connect
from tests.conftest import require_real_redis

LOOPS = shutil.which("loops", path=str(Path(sys.executable).parent)) or "loops"


@pytest.fixture
def env() -> Iterator[tuple[redis.Redis, dict[str, str], str]]:
    url = require_real_redis()
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    client = connect(url)
    yield client, {**os.environ, "REDIS_URL": url, "LOOPS_PREFIX": prefix}, prefix
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def health(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOPS, "health", *args], env=environ, capture_output=True, text=True, timeout=30
    )


def test_health_fails_with_one_line_when_nothing_runs(
    env: tuple[redis.Redis, dict[str, str], str],
) -> None:
    _, environ, prefix = env
    result = health(environ, "gate")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"loops health: no live gate (prefix '{prefix}' at {environ['REDIS_URL']})"
    ]


def test_health_finds_a_live_role_and_its_family(
    env: tuple[redis.Redis, dict[str, str], str],
) -> None:
    client, environ, prefix = env
    PresenceBeat(client, prefix, "worker:loop-1", "i1", interval_s=30).beat()
    PresenceBeat(client, prefix, "gate", "i2", interval_s=30).beat()

    assert health(environ, "worker").returncode == 0
    assert health(environ, "worker:loop-1", "--here").returncode == 0
    assert health(environ, "worker:loop-2").returncode == 1
    assert health(environ, "merge").returncode == 1
    listing = health(environ)
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == ["gate", "worker:loop-1"]


def test_health_other_prefix_is_invisible(env: tuple[redis.Redis, dict[str, str], str]) -> None:
    client, environ, prefix = env
    PresenceBeat(client, prefix + "-other", "gate", "i", interval_s=30).beat()
    try:
        assert health(environ, "gate").returncode == 1
    finally:
        client.delete(f"{prefix}-other:presence:gate:i")


def test_health_hides_the_redis_password(env: tuple[redis.Redis, dict[str, str], str]) -> None:
    _, environ, _ = env
    result = health(environ, "gate", "--redis", "redis://:hunter2@127.0.0.1:1/0")
    assert result.returncode == 1
    assert "hunter2" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_health_without_a_running_system_says_so(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOOPS_PREFIX")}
    result = health(environ, "gate", "--dir", str(tmp_path))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("loops: ") and str(tmp_path) in line


def test_health_here_counts_only_this_host(env: tuple[redis.Redis, dict[str, str], str]) -> None:
    client, environ, prefix = env
    beat = PresenceBeat(client, prefix, "gate", "elsewhere:1", interval_s=30)
    client.set(beat.key, beat.presence().model_copy(update={"host": "elsewhere"}).model_dump_json())

    assert health(environ, "gate").returncode == 0
    here = health(environ, "gate", "--here")
    assert here.returncode == 1
    assert "no live gate on this host" in here.stderr
