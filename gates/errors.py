"""Errors of the gate and the merge queue."""

from __future__ import annotations

from events import LoopsError


class JudgeError(LoopsError):
    """Raised when a judge gives no verdict (timeout, API outage, unreadable reply)."""

    def __init__(self, reason: str, judge: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.judge = judge


class MergeError(LoopsError):
    """Raised when the merge queue cannot finish a merge now (main kept moving); the
    event stays pending and is retried."""

    def __init__(self, reason: str, task_id: str = "", commit: str = "") -> None:
        super().__init__(reason)
        self.task_id = task_id
        self.commit = commit


class JobError(LoopsError):
    """Raised when a verification job failed or did not finish in time."""

    def __init__(self, reason: str, job_id: str = "") -> None:
        super().__init__(reason)
        self.job_id = job_id
