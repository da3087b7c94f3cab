"""A bounded pool that blocks, and roles that wait out a Redis that goes away and
comes back (a real `redis-server` of the test's own, stopped and started again)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.compose import Threads
from bus import BusSettings, RedisBus, connect
from events import Event
from tests.bus.helpers import hint, numbers
from tests.bus.ownserver import OwnRedis
from tests.conftest import wait_until


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_pool_is_bounded_and_waits_instead_of_raising(own_redis: OwnRedis) -> None:
    client = connect(BusSettings(url=own_redis.url, max_connections=2, pool_timeout=0.2))
    pool = client.connection_pool
    try:
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert pool.connection_kwargs["protocol"] == 2
        assert pool.connection_kwargs["retry"].get_retries() == 0
        held = [pool.get_connection(), pool.get_connection()]
        # Full: a third caller waits `pool_timeout`, then gets the error roles retry.
        with pytest.raises(redis.ConnectionError):
            pool.get_connection()
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(bool(client.ping())))
        assert BusSettings().pool_timeout > 1  # by default a caller waits, and long
        pool.release(held.pop())
        waiter.start()
        waiter.join(timeout=10)
        assert got == [True]
        pool.release(held.pop())
    finally:
        client.close()


def test_a_subscription_and_publishers_wait_out_a_server_restart(
    own_redis: OwnRedis,
) -> None:
    settings = BusSettings(url=own_redis.url, prefix="outage", socket_connect_timeout=0.5)
    bus = RedisBus.from_settings(settings)
    got: list[Event] = []
    sub = bus.subscribe("g", "c", got.append)
    stop = threading.Event()
    runner = threading.Thread(target=sub.run, args=(stop,), kwargs={"block_ms": 200})
    runner.start()
    try:
        bus.publish(hint(1))
        wait_until(lambda: numbers(got) == [1])
        own_redis.stop()
        with pytest.raises(redis.ConnectionError):
            bus.publish(hint(2))  # never retried by the client: the caller decides
        own_redis.start()  # same port, empty (no persistence): the group comes back too

        def published() -> bool:
            try:
                bus.publish(hint(3))
                return True
            except redis.ConnectionError:
                return False

        wait_until(published, timeout=15)
        wait_until(lambda: numbers(got) == [1, 3], timeout=15)
    finally:
        stop.set()
        runner.join(timeout=10)
        bus.close()
    assert not runner.is_alive()


def test_a_role_that_loses_redis_while_starting_is_started_again() -> None:
    calls: list[int] = []

    def role() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("Connection refused")

    roles = Threads()
    roles.start("flaky", role)
    wait_until(lambda: len(calls) == 3)
    roles.shutdown(timeout=10)
    assert roles.errors == []
