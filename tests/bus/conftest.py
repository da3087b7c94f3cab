"""Backends reachable over TCP, for tests whose consumers are real subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import connect
from infra.embedded import EmbeddedServer
from tests.conftest import RedisBackend, require_real_redis


@pytest.fixture(scope="module")
def fakeredis_tcp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fakeredis's TCP server (the embedded fallback), one per test module; the URL
    carries its password, so that subprocesses given only a URL can log in."""
    server = EmbeddedServer(tmp_path_factory.mktemp("fakeredis-tcp"), kind="fakeredis")
    try:
        server.start()
        yield server.client_url()
    finally:
        server.stop()


@pytest.fixture(params=["fakeredis-tcp", "real"])
def tcp_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisBackend]:
    """A backend with a URL another process can connect to; own prefix, cleaned up."""
    if request.param == "real":
        url = require_real_redis()
    else:
        url = request.getfixturevalue("fakeredis_tcp_url")
    backend = RedisBackend(request.param, connect(url), f"test-{uuid.uuid4().hex[:10]}", url)
    try:
        yield backend
    finally:
        try:
            backend.cleanup()
        finally:
            backend.client.close()
