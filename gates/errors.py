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


class WorktreeBlocked(LoopsError):
    """Raised when main is checked out in a worktree whose uncommitted or untracked
    files would be overwritten by the fast-forward (git refuses; they are kept)."""

    def __init__(self, worktree: str, files: list[str], detail: str) -> None:
        shown = ", ".join(files) or "(see git status)"
        super().__init__(
            f"uncommitted changes in {worktree} block the fast-forward of main ({shown}): "
            "commit or stash them, then answer retry"
        )
        self.worktree = worktree
        self.files = files
        self.detail = detail
