"""Verification gate and git manager: only verified work reaches main.

The seams the composition root fills in are declared here:

- `CriteriaLoader`: reads a task's acceptance criteria from a checkout of main
  (`loops/` owns the file formats; `cli/` injects its reader).
- `Judge`: decides a natural-language criterion (`AnthropicJudge`, or a fake in tests).
- `JobRunner` (in `gates.jobs`): where verification jobs run (in-process, or rq).
- `infra.store.Store`: progress that must survive a crash (Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from events import Criterion, CriterionResult

CriteriaLoader = Callable[[Path, str, str], list[Criterion]]
"""`(root, loop, task_id) -> criteria`: the task's acceptance criteria as written in the
tree at `root` (a checkout of main). Raises or returns [] when the task is unknown."""


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one natural criterion."""

    passed: bool
    reason: str


class Judge(Protocol):
    """Judges natural-language criteria against the evidence of a claim."""

    name: str  # recorded as `judged_by` (e.g. the model name)

    def judge(
        self, criterion: Criterion, diff: str, script_results: Sequence[CriterionResult]
    ) -> Judgement:
        """Decide whether `criterion` holds for the change `diff`. Raises `JudgeError`
        when no verdict could be obtained (timeout, outage, unreadable reply)."""


from gates.batch import BatchMergeQueue  # noqa: E402
from gates.errors import JudgeError, MergeError  # noqa: E402
from gates.gate import VerificationGate  # noqa: E402
from gates.gitutil import ensure_loop_branch, ensure_loop_worktree  # noqa: E402
from gates.jobs import InlineJobs, JobRunner, RqJobs  # noqa: E402
from gates.judge import AnthropicJudge  # noqa: E402
from gates.merge import MergedTasks, MergeQueue, merged_tasks_on  # noqa: E402
from gates.protect import DEFAULT_PROTECTED  # noqa: E402
from gates.settings import GateSettings, MergeSettings, TamperPolicy  # noqa: E402
from infra.git import GitError  # noqa: E402

__all__ = [
    "DEFAULT_PROTECTED",
    "AnthropicJudge",
    "BatchMergeQueue",
    "CriteriaLoader",
    "GateSettings",
    "GitError",
    "InlineJobs",
    "JobRunner",
    "Judge",
    "JudgeError",
    "Judgement",
    "MergeError",
    "MergeQueue",
    "MergeSettings",
    "MergedTasks",
    "RqJobs",
    "TamperPolicy",
    "VerificationGate",
    "ensure_loop_branch",
    "ensure_loop_worktree",
    "merged_tasks_on",
]
