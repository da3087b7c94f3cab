"""BusSettings and connect(): the redis-py 8 pitfalls are handled."""

from __future__ import annotations

import time

import pytest

from bus import BusSettings, RedisBus, TrimPolicy, connect
from bus.consumer import blocking_read
from events import ConfigError


def test_from_env_reads_redis_url() -> None:
    s = BusSettings.from_env({"REDIS_URL": "redis://h:1/2"}, prefix="p", max_deliveries=3)
    assert (s.url, s.prefix, s.max_deliveries) == ("redis://h:1/2", "p", 3)
    assert BusSettings.from_env({}).url == "redis://127.0.0.1:6379/0"
    assert BusSettings.from_env({"LOOPS_PREFIX": "demo"}).prefix == "demo"
    assert BusSettings.from_env({"LOOPS_PREFIX": "demo"}, prefix="x").prefix == "x"
    assert BusSettings().max_deliveries == 5
    assert BusSettings().trim is TrimPolicy.MAXLEN


def test_invalid_settings_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        BusSettings.from_dsn("127.0.0.1:6379")
    with pytest.raises(ConfigError, match="socket_timeout"):
        BusSettings(block_ms=5000, socket_timeout=2.0)
    with pytest.raises(ConfigError, match="max_deliveries"):
        BusSettings(max_deliveries=0)


def test_connect_pins_resp2_no_retries_and_a_timeout_above_block() -> None:
    client = connect(BusSettings(url="redis://127.0.0.1:1/0", block_ms=6000))
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["protocol"] == 2
        assert kwargs["socket_timeout"] > 6.0
        assert kwargs["retry"].get_retries() == 0
        bus = RedisBus(client)
        assert bus.clamp_block(6000) == 6000
        assert bus.clamp_block(60_000) < kwargs["socket_timeout"] * 1000
    finally:
        client.close()


def test_blocking_read_does_not_spin_on_servers_that_return_at_once() -> None:
    calls: list[int | None] = []

    def empty_at_once(block: int | None) -> list[int]:
        calls.append(block)
        return []

    started = time.monotonic()
    assert blocking_read(empty_at_once, 200) == []
    assert time.monotonic() - started >= 0.19
    assert len(calls) < 15  # backs off to 50 ms instead of thousands of reads
    calls.clear()
    assert blocking_read(empty_at_once, 0) == []
    assert calls == [None]  # block_ms=0 reads without BLOCK (BLOCK 0 waits forever)
