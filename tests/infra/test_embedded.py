"""The embedded server: starts, records its URL, is reachable from another process,
is adopted after its owner dies, and stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus import RedisBus, connect
from events import ConfigError, Event
from infra.embedded import EmbeddedServer, ServerStartFailed, reachable, recorded_url, resolve_url
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]

SECOND_PROCESS = """
import sys
from bus import RedisBus, connect
from infra.embedded import resolve_settings
from events import Role, Source, TaskHint

settings = resolve_settings(None, sys.argv[1], prefix="embedded")
client = connect(settings)
RedisBus(client, settings=settings).publish(
    TaskHint(source=Source(role=Role.OPERATOR), loop="a", task_id="T-1", text="from afar")
)
client.close()
print(settings.url)
"""


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.mark.parametrize("kind", ["redis-server", "fakeredis"])
@pytest.mark.usefixtures("no_redis_url")
def test_embedded_server_lifecycle(tmp_path: Path, kind: str) -> None:
    if kind == "redis-server" and not _on_path("redis-server"):
        if IN_CI:
            pytest.fail("no redis-server on PATH; CI=true requires it (it runs the Redis service)")
        pytest.skip("no redis-server on PATH")
    with pytest.raises(ConfigError, match="no coding-loops system is running in"):
        resolve_url(None, tmp_path)

    server = EmbeddedServer(tmp_path, kind=kind)  # type: ignore[arg-type]
    url = server.start()
    try:
        assert url.startswith("redis://loops@127.0.0.1:")  # no password in it
        assert (tmp_path / ".loops" / "redis.url").read_text().strip() == url
        assert int((tmp_path / ".loops" / "redis.pid").read_text()) == server.pid
        assert recorded_url(tmp_path) == url
        assert resolve_url(None, tmp_path) == url

        # another process (another terminal's `loops events`) reaches the same state
        out = subprocess.run(
            [sys.executable, "-c", SECOND_PROCESS, str(tmp_path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == url
        settings = server.settings(prefix="embedded")
        client = connect(settings)
        try:
            got: list[Event] = []
            RedisBus(client, settings=settings).subscribe("g", "c", got.append).drain()
            assert [getattr(e, "text", None) for e in got] == ["from afar"]
        finally:
            client.close()
    finally:
        server.stop()
    assert not (tmp_path / ".loops" / "redis.url").exists()
    assert not (tmp_path / ".loops" / "redis.pid").exists()
    with pytest.raises(ConfigError, match=r"start one with `loops up "):
        resolve_url(None, tmp_path)


@pytest.mark.usefixtures("no_redis_url")
def test_a_running_server_is_adopted(tmp_path: Path) -> None:
    first = EmbeddedServer(tmp_path, kind="fakeredis")
    url = first.start()
    password = first.password
    try:
        client = connect(first.settings())
        client.set("kept", "yes")
        client.close()
        # the owner died (kill -9): its pid in redis.owner is no process any more
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        (tmp_path / ".loops" / "redis.owner").write_text(dead.stdout)
        # a new `loops up` in the same directory adopts it, state intact
        second = EmbeddedServer(tmp_path)
        assert second.start() == url
        assert second.adopted and second.owned
        assert second.password == password  # the same credentials, from .loops/
        client = connect(second.settings())
        assert client.get("kept") == b"yes"
        client.close()
        second.stop()
        assert not reachable(url, password=password)
        assert recorded_url(tmp_path) is None
    finally:
        first.stop()


@pytest.mark.usefixtures("no_redis_url")
def test_a_server_owned_by_a_live_process_is_shared_not_stopped(tmp_path: Path) -> None:
    owner = EmbeddedServer(tmp_path, kind="fakeredis")
    url = owner.start()
    password = owner.password
    try:
        # pretend another live process owns it (another terminal's `loops up`)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (tmp_path / ".loops" / "redis.owner").write_text(f"{sleeper.pid}\n")
            guest = EmbeddedServer(tmp_path)
            assert guest.start() == url
            assert not guest.owned
            guest.stop()
            assert reachable(url, password=password)
            assert recorded_url(tmp_path) == url
        finally:
            sleeper.kill()
            sleeper.wait()
        (tmp_path / ".loops" / "redis.owner").write_text(f"{os.getpid()}\n")
    finally:
        owner.stop()
    assert not reachable(url, password=password)
    assert not (tmp_path / ".loops" / "redis.owner").exists()


def test_resolve_url_prefers_explicit_then_env(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://env:6379/0"}
    assert resolve_url("redis://flag:6379/1", tmp_path, env) == "redis://flag:6379/1"
    assert resolve_url(None, tmp_path, env) == "redis://env:6379/0"
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        resolve_url("localhost:6379", tmp_path)


@pytest.mark.usefixtures("no_redis_url")
def test_stale_record_is_not_a_running_system(tmp_path: Path) -> None:
    (tmp_path / ".loops").mkdir()
    (tmp_path / ".loops" / "redis.url").write_text("redis://127.0.0.1:1/0\n")
    with pytest.raises(ConfigError, match="no coding-loops system is running"):
        resolve_url(None, tmp_path)


def test_missing_redis_server_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerStartFailed, match="redis-server is not on PATH"):
        EmbeddedServer(tmp_path, kind="redis-server").start()


def _on_path(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None
