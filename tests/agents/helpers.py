"""Event factories and a hand-driven clock for the agents' tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from events import (
    FailureKind,
    IterationFinished,
    IterationOutcome,
    LoopHeartbeat,
    LoopStatus,
    Role,
    Source,
)

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
WORKER = Source(role=Role.WORKER, instance="test-host:1")


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def heartbeat(loop: str, at: datetime, **kw: Any) -> LoopHeartbeat:
    fields: dict[str, Any] = {
        "status": LoopStatus.RUNNING,
        "pid": 4242,
        "host": "test-host",
        "interval_s": 1.0,
        "task_id": "T1",
    }
    fields.update(kw)
    return LoopHeartbeat(source=WORKER, loop=loop, ts=at, **fields)


def iteration(loop: str, at: datetime, n: int, **kw: Any) -> IterationFinished:
    fields: dict[str, Any] = {
        "task_id": "T1",
        "iteration": n,
        "attempt": 1,
        "outcome": IterationOutcome.CONTINUE,
        "duration_s": 30.0,
        "changed_files": [f"src/f{n}.py"],
        "reply_chars": 2000 + 10 * n,
    }
    fields.update(kw)
    return IterationFinished(source=WORKER, loop=loop, ts=at, **fields)


def failed(loop: str, at: datetime, n: int, detail: str, **kw: Any) -> IterationFinished:
    fields: dict[str, Any] = {
        "outcome": IterationOutcome.FAILED,
        "failure": FailureKind.AGENT_ERROR,
        "failure_detail": detail,
        "changed_files": ["src/x.py"],
    }
    fields.update(kw)
    return iteration(loop, at, n, **fields)
