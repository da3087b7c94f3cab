"""The account-wide usage windows, on fakeredis and the real Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from bus import connect
from bus.usage import MAX_WINDOW, UsageWindows, account_key
from tests.conftest import RedisBackend

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
KEY = "sk-ant-api03-" + "x" * 40


def test_account_key_is_stable_and_hides_the_secret() -> None:
    a = account_key("claude", secret=KEY)
    assert a == account_key("claude", secret=KEY)
    assert a.startswith("claude:") and len(a) == len("claude:") + 16
    assert KEY not in a and "x" * 8 not in a


def test_same_runner_and_credentials_is_one_account_anything_else_is_another(
    tmp_path: object,
) -> None:
    keys = {
        account_key("claude", config_dir="/home/a/.claude"),
        account_key("claude", config_dir="/home/b/.claude"),
        account_key("claude", secret=KEY),
        account_key("anthropic", secret=KEY),
        account_key("anthropic", secret=KEY, base_url="http://127.0.0.1:9"),
        account_key("claude", name="team"),
    }
    assert len(keys) == 6
    # The same directory spelled differently is the same account.
    assert account_key("claude", config_dir="/home/a/.claude/") == account_key(
        "claude", config_dir="/home/a/x/../.claude"
    )
    # An explicit account name groups loops whatever their credentials.
    assert account_key("claude", name="team", secret="one") == account_key(
        "claude", name="team", secret="two"
    )
    with pytest.raises(ValueError):
        account_key("a:b")


def test_a_recorded_window_holds_every_reader_until_the_reset(
    redis_backend: RedisBackend,
) -> None:
    writer = UsageWindows(redis_backend.client, redis_backend.prefix)
    reader = UsageWindows(redis_backend.client, redis_backend.prefix)
    account, other = account_key("claude", secret=KEY), account_key("claude", secret="k2")
    assert reader.until(account, now=NOW) is None and reader.wait_s(account, now=NOW) == 0.0
    reset = NOW + timedelta(minutes=30)
    assert writer.record(account, reset, now=NOW) == reset
    assert reader.until(account, now=NOW) == reset
    assert reader.wait_s(account, now=NOW + timedelta(minutes=10)) == 20 * 60
    assert reader.until(other, now=NOW) is None  # another account is not held
    assert reader.until(account, now=reset) is None  # the window ends at the reset
    assert reader.open(now=NOW) == {account: reset}
    assert reader.open(now=reset) == {} and reader.until(account, now=NOW) is None  # cleaned


def test_an_earlier_reset_never_shortens_a_window(redis_backend: RedisBackend) -> None:
    windows = UsageWindows(redis_backend.client, redis_backend.prefix)
    account = account_key("anthropic", secret=KEY)
    late, early = NOW + timedelta(hours=2), NOW + timedelta(minutes=5)
    windows.record(account, late, now=NOW)
    assert windows.record(account, early, now=NOW) == late
    assert windows.until(account, now=NOW) == late
    later = NOW + timedelta(hours=3)
    assert windows.record(account, later, now=NOW) == later


def test_concurrent_records_keep_the_latest_reset(redis_backend: RedisBackend) -> None:
    """Loops on other connections (processes) recording at once: the latest wins."""
    account = account_key("claude", config_dir="/tmp/shared")
    resets = [NOW + timedelta(seconds=60 * i) for i in range(1, 21)]
    clients = [redis_backend.client] * 4
    if redis_backend.url:  # the real server: one connection per writer, as processes have
        clients = [connect(redis_backend.url) for _ in range(4)]
    try:
        threads = [
            threading.Thread(
                target=lambda c=c, i=i: [
                    UsageWindows(c, redis_backend.prefix).record(account, r, now=NOW)
                    for r in resets[i::4]
                ]
            )
            for i, c in enumerate(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        if redis_backend.url:
            for c in clients:
                c.close()
    assert UsageWindows(redis_backend.client, redis_backend.prefix).until(account, now=NOW) == max(
        resets
    )


def test_a_reset_far_ahead_is_capped_and_a_naive_time_is_refused(
    redis_backend: RedisBackend,
) -> None:
    windows = UsageWindows(redis_backend.client, redis_backend.prefix)
    account = account_key("claude", secret=KEY)
    assert windows.record(account, NOW + timedelta(days=400), now=NOW) == NOW + MAX_WINDOW
    with pytest.raises(ValueError, match="time zone"):
        windows.record(account, datetime(2026, 12, 5, 10, 0), now=NOW)
    windows.clear(account)
    assert windows.until(account, now=NOW) is None


def test_the_record_never_holds_the_secret(redis_backend: RedisBackend) -> None:
    windows = UsageWindows(redis_backend.client, redis_backend.prefix)
    windows.record(account_key("anthropic", secret=KEY), NOW + timedelta(hours=1), now=NOW)
    dump = repr(redis_backend.client.zrange(windows.key, 0, -1, withscores=True))
    assert KEY not in dump and "x" * 8 not in dump
