"""The one file lock and the one atomic write."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from infra.files import FileLock, write_json_atomic, write_text_atomic


def test_a_held_lock_refuses_a_second_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(wait=False)
    first.note("4242")
    assert not second.acquire(wait=False)
    assert second.holder() == "4242"
    first.release()
    assert second.acquire(wait=False)
    second.release()


def test_a_waiting_lock_gets_it_once_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    order: list[str] = []
    holder = FileLock(path)
    holder.acquire()
    got = threading.Event()

    def waiter() -> None:
        with FileLock(path):
            order.append("waiter")
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not got.wait(0.05)  # still held: the waiter is blocked, not failed
    order.append("holder")
    holder.release()
    thread.join(10)
    assert order == ["holder", "waiter"]


def test_atomic_write_keeps_the_mode_and_sets_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    write_json_atomic(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    secret = tmp_path / "token"
    write_text_atomic(secret, "s3cret\n", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
