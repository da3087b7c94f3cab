"""What has merged into main for one loop, from durable state only (invariant 9).

The durable record `bus.PassedLedger` first; else the merge queue's
`Loops-Task: loop/TASK` trailer on main. Never the stream's history (it is trimmed)
and never `test-state.json` alone (an agent or a person can write "passed" into it).
"""

from __future__ import annotations

from pathlib import Path

from bus import PassedLedger
from infra.git import GitError, git
from loops.book import FileStatus, TaskBook


class MergedTasks:
    """Merged tasks as seen by loop `loop` on `repo`'s `main_branch`."""

    def __init__(
        self, loop: str, repo: Path, main_branch: str, ledger: PassedLedger | None
    ) -> None:
        self.loop = loop
        self.repo = repo
        self.main_branch = main_branch
        self.ledger = ledger

    def record(self, task_id: str, merged_commit: str) -> None:
        """Our `task_id` merged as `merged_commit` (before its `task.passed` goes out)."""
        if self.ledger is not None:
            self.ledger.record(self.loop, task_id, merged_commit)

    def has(self, task: str) -> bool:
        """`task` (`loop/TASK`, any loop) is in the durable record."""
        return self.ledger is not None and self.ledger.get(task) is not None

    def commit(self, task_id: str) -> str | None:
        """The commit that merged our `task_id`, or None if it never merged."""
        if self.ledger is not None:
            merged = self.ledger.get(f"{self.loop}/{task_id}")
            if merged:
                return merged
        trailer = f"Loops-Task: {self.loop}/{task_id}"
        try:
            out = git(
                self.repo,
                "log",
                "--format=%H%x00%B%x01",
                "--fixed-strings",
                f"--grep={trailer}",
                self.main_branch,
            )
        except GitError:
            return None
        for entry in out.split("\x01"):
            sha, _, body = entry.strip().partition("\x00")
            if sha and trailer in (line.strip() for line in body.splitlines()):
                return sha
        return None

    def reject_unmerged(
        self, book: TaskBook, before: dict[str, FileStatus] | None = None
    ) -> list[str]:
        """Set back each `passed` in `book` that no merge backs: to its status in
        `before` (statuses known good; tasks passed there are not checked again), else
        pending. `before=None` checks every task. Returns one problem per task."""
        problems: list[str] = []
        path = book.state_path
        for task_id, status in book.statuses().items():
            if status is not FileStatus.PASSED:
                continue
            if before is not None and before.get(task_id) is FileStatus.PASSED:
                continue
            if self.commit(task_id) is not None:
                continue
            back = (before or {}).get(task_id, FileStatus.PENDING)
            if back is FileStatus.PASSED:
                back = FileStatus.PENDING
            book.update(
                task_id, status=back, last_result="rejected: passed without a merge on main"
            )
            problems.append(
                f"{path}: tests[{task_id}].status: 'passed' without a merged commit on "
                f"{self.main_branch} (no Loops-Task: {self.loop}/{task_id} trailer): "
                f"set back to {back.value}; a task passes only when its verified commit merges"
            )
        return problems
