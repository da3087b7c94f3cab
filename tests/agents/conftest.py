from __future__ import annotations

import uuid
from collections.abc import Iterator

import fakeredis
import pytest

from infra.store import Store
from tests.agents.helpers import Clock


@pytest.fixture
def redis_client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def store(redis_client: fakeredis.FakeRedis) -> Iterator[Store]:
    s = Store(redis_client, prefix=f"t-{uuid.uuid4().hex[:8]}", role="monitor")
    yield s
    s.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()
