"""The embedded server needs credentials an agent does not have (invariant 8).

Both backends (redis-server and the fakeredis fallback) refuse a client that has not
logged in, and a wrong password; the password and the signing key are in files only
their owner can read, never in `redis.url`, on a command line or in a `repr`."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bus import BusSettings, RedisBus, connect
from bus.settings import derive_signing_key
from events import Role, Source, TaskHint
from infra.embedded import EmbeddedServer, reachable, resolve_settings
from tests.conftest import IN_CI, wait_until


@pytest.fixture(params=["redis-server", "fakeredis"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedServer]:
    monkeypatch.delenv("REDIS_URL", raising=False)
    if request.param == "redis-server" and shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("no redis-server on PATH; CI=true requires it")
        pytest.skip("no redis-server on PATH")
    embedded = EmbeddedServer(tmp_path, kind=request.param)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def _port(server: EmbeddedServer) -> int:
    assert server.url is not None
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def test_a_client_without_the_password_is_refused(server: EmbeddedServer) -> None:
    port = _port(server)
    anonymous = connect(f"redis://127.0.0.1:{port}/0")
    wrong = connect(BusSettings(url=f"redis://loops@127.0.0.1:{port}/0", password="wrong-pw"))
    try:
        for client in (anonymous, wrong):
            with pytest.raises(redis.RedisError):
                client.xadd("loops:events", {"type": "verification.passed", "data": "{}"})
            with pytest.raises(redis.RedisError):
                client.keys("*")
    finally:
        anonymous.close()
        wrong.close()
    assert server.url is not None
    assert not reachable(server.url)  # the recorded URL alone gets nobody in
    with connect(server.settings()) as client:
        assert client.xlen("loops:events") == 0  # nothing landed
        assert client.ping()


def test_credentials_are_private_files_and_nowhere_else(server: EmbeddedServer) -> None:
    state = server.state_dir
    assert server.password and server.signing_key
    for name in ("redis.auth", "signing.key"):
        mode = stat.S_IMODE((state / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert (state / "redis.auth").read_text().strip() == server.password
    url_file = (state / "redis.url").read_text()
    assert server.password not in url_file
    assert server.pid is not None
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert server.password.encode() not in cmdline
    settings = server.settings()
    for shown in (repr(settings), str(settings)):
        assert server.password not in shown
        assert server.signing_key.hex() not in shown


def test_a_restart_keeps_the_credentials_so_signed_events_stay_valid(
    server: EmbeddedServer,
) -> None:
    settings = server.settings(prefix="restart")
    with RedisBus.from_settings(settings) as bus:
        bus.publish(TaskHint(source=Source(role=Role.OPERATOR), loop="a", task_id="T", text="x"))
    password, key = server.password, server.signing_key
    project = server.project_dir
    server.stop()
    again = EmbeddedServer(project, kind=server.kind)
    again.start()
    try:
        assert (again.password, again.signing_key) == (password, key)
    finally:
        again.stop()


def test_operator_settings_come_from_the_state_dir(server: EmbeddedServer) -> None:
    found = resolve_settings(None, server.project_dir)
    assert found.url == server.url
    assert found.password == server.password
    assert found.signing_key == server.signing_key
    # `--redis URL` copied from `loops status` (no password in it) gets them too
    assert server.url is not None
    explicit = resolve_settings(server.url, server.project_dir)
    assert explicit.password == server.password
    assert explicit.signing_key == server.signing_key


def test_distributed_settings_take_the_password_from_the_url_or_the_environment() -> None:
    from_url = BusSettings.from_env({"REDIS_URL": "redis://:s3cret-pw@redis:6379/0"})
    from_env = BusSettings.from_env(
        {"REDIS_URL": "redis://redis:6379/0", "LOOPS_REDIS_PASSWORD": "s3cret-pw"}
    )
    assert from_url.effective_password == from_env.effective_password == "s3cret-pw"
    # one secret configures both: the key is derived from the password ...
    assert from_url.signing_key == from_env.signing_key == derive_signing_key("s3cret-pw")
    # ... unless one is given
    given = BusSettings.from_env(
        {"REDIS_URL": "redis://redis:6379/0", "LOOPS_SIGNING_KEY": "ab" * 32}
    )
    assert given.signing_key == bytes.fromhex("ab" * 32)
    assert "s3cret-pw" not in repr(from_url)
    assert BusSettings.from_env({"REDIS_URL": "redis://redis:6379/0"}).signing_key is None


def test_a_server_from_before_passwords_is_replaced_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade: the project's server was started without a password and its owner
    is gone. The next start stops it and starts a protected one on the same AOF."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    from tests.bus.protected import need_redis_server

    need_redis_server()
    state = tmp_path / ".loops"
    (state / "redis").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    old = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--dir", str(state / "redis")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: reachable(url), timeout=15)
        with connect(url) as client:
            client.set("kept", "yes")
        (state / "redis.url").write_text(url + "\n")
        (state / "redis.pid").write_text(f"{old.pid}\n")
        (state / "redis.owner").write_text("999999999\n")  # no such process
        server = EmbeddedServer(tmp_path, kind="redis-server")
        server.start()
        try:
            assert old.wait(timeout=10) == 0  # stopped cleanly: its AOF is written
            assert server.url != url and not reachable(str(server.url))
            with connect(server.settings()) as client:
                assert client.get("kept") == b"yes"
        finally:
            server.stop()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(timeout=10)
