"""The one Redis store, on fakeredis and real Redis, and the dedupe window."""

from __future__ import annotations

from bus import Window
from infra.store import Store
from tests.conftest import RedisBackend


def test_store_keys_values_docs_and_marks(redis_backend: RedisBackend) -> None:
    store = Store(redis_backend.client, redis_backend.prefix, "gates")
    assert store.key("claim", "x") == f"{redis_backend.prefix}:gates:claim:x"
    assert store.get("a") is None
    store.set("a", "1")
    assert store.get("a") == "1"
    assert store.incr("n") == 1 and store.incr("n") == 2
    assert store.claim("once") and not store.claim("once")
    store.doc_put("docs", "e1", {"k": [1, 2]})
    assert store.doc_get("docs", "e1") == {"k": [1, 2]}
    assert store.doc_all("docs") == {"e1": {"k": [1, 2]}}
    store.mark("times", "m", 10.0)
    store.mark("times", "m", 20.0)  # the first time stays
    assert store.marked_at("times", "m") == 10.0
    assert store.marked_since("times", 5.0) == ["m"]
    store.delete("a")
    assert store.get("a") is None
    store.clear()
    assert store.doc_all("docs") == {}


def test_a_memory_store_is_private_to_its_owner() -> None:
    one, two = Store.memory(), Store.memory()
    one.set("k", "v")
    assert one.get("k") == "v" and two.get("k") is None


def test_window_remembers_at_least_the_last_ids_in_the_callers_list() -> None:
    saved: list[str] = []
    window = Window(4, saved)
    assert window.first_time("a") and not window.first_time("a")
    for i in range(20):
        window.mark(f"e{i}")
    assert all(window.seen(f"e{i}") for i in range(16, 20))
    assert not window.seen("a") and not window.seen("e0")
    assert saved is window.ids and 4 <= len(saved) <= 5
    again = Window(4, list(saved))  # as reloaded from a state file
    assert again.seen("e19") and not again.first_time("e19")
