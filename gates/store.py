"""Small durable state of the gate and merge queue (progress, tries, open escalations).

In production a Redis hash-free key space under `{prefix}:gates:`; in tests a dict."""

from __future__ import annotations

from typing import Any, Protocol


class StateStore(Protocol):
    """String keys to string values; what must survive a crash of the process."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def incr(self, key: str) -> int: ...


class MemoryStore:
    """A `StateStore` in a dict: one process, lost on exit."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def incr(self, key: str) -> int:
        value = int(self.data.get(key, "0")) + 1
        self.data[key] = str(value)
        return value


class RedisStore:
    """A `StateStore` on a redis-py (or fakeredis) client, keys under `{prefix}:gates:`."""

    def __init__(self, client: Any, prefix: str = "loops") -> None:
        self.client = client
        self.prefix = f"{prefix}:gates:"

    def get(self, key: str) -> str | None:
        value = self.client.get(self.prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def set(self, key: str, value: str) -> None:
        self.client.set(self.prefix + key, value)

    def delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def incr(self, key: str) -> int:
        return int(self.client.incr(self.prefix + key))
