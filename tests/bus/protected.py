"""A `redis-server` of a test's own that needs a password, as compose runs Redis
(`requirepass`): for tests of authentication, never the shared server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.embedded import reachable
from tests.conftest import IN_CI, wait_until


def need_redis_server() -> None:
    """Skip without a `redis-server` binary (fail under CI=true)."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("no redis-server on PATH; CI=true requires it")
        pytest.skip("no redis-server on PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def protected_redis_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """Run one until the block ends; yields its URL (without the password) and the
    password. The password goes in on stdin, as the embedded server's does."""
    need_redis_server()
    port, password = _free_port(), "test-pw-" + os.urandom(12).hex()
    proc = subprocess.Popen(
        ["redis-server", "-", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"requirepass {password}\n".encode())
    proc.stdin.close()
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {proc.returncode}")
        return reachable(url, timeout=0.5, password=password)

    try:
        wait_until(up, timeout=15)
        yield url, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)
