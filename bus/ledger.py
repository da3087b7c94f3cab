"""`PassedLedger`: which tasks have merged, in durable state rather than in the
stream's history (invariant 9).

A Redis hash `{prefix}:passed`, field `loop/TASK`, value the merged commit on main.
The loop worker writes it when it takes a `merge.completed` in, before its
`task.passed` is published; workers (cross-loop dependencies, resume) and the PM read
it. Trimming the stream (MAXLEN ~100k) or losing an event never loses what merged.
"""

from __future__ import annotations

from typing import Any

import redis


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class PassedLedger:
    """The durable record of merged tasks of one bus prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "loops") -> None:
        self.client = client
        self.key = f"{prefix}:passed"

    def record(self, loop: str, task_id: str, merged_commit: str) -> None:
        """Remember that `loop/task_id` merged as `merged_commit` (idempotent)."""
        self.client.hset(self.key, f"{loop}/{task_id}", merged_commit)

    def get(self, task: str) -> str | None:
        """The merged commit of `task` (`loop/TASK`), or None if it has not merged."""
        value = self.client.hget(self.key, task)
        return None if value is None else _text(value)

    def all(self) -> dict[str, str]:
        """Every merged task (`loop/TASK`) and its merged commit."""
        raw: Any = self.client.hgetall(self.key)
        return {_text(k): _text(v) for k, v in raw.items()}

    def of_loop(self, loop: str) -> dict[str, str]:
        """The merged tasks of `loop`: task id -> merged commit."""
        head = f"{loop}/"
        return {k[len(head) :]: v for k, v in self.all().items() if k.startswith(head)}
