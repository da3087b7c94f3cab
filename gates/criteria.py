"""A task's acceptance criteria, as main says, for the gate and the merge queue alike."""

from __future__ import annotations

from pathlib import Path

from events import Criterion, ScriptCheck
from gates import CriteriaLoader


def load_criteria(
    loader: CriteriaLoader, root: Path, loop: str, task_id: str, default_check: str | None
) -> tuple[list[Criterion], str]:
    """The criteria of `loop/task_id` in the checkout of main at `root` (the default check
    for a task without any), and why there are none when the list is empty."""
    why = (
        f"unknown task {loop}/{task_id} in main's spec (a task added by hand while the "
        f"system runs is verified from main: commit the file that lists it, then "
        f"`loops reset {loop} {task_id}`)"
    )
    try:
        criteria = list(loader(root, loop, task_id) or [])
    except Exception as exc:  # the loader is foreign code; its failure is a verdict
        criteria = []
        why = f"{why}: {type(exc).__name__}: {exc}"
    if not criteria and default_check:
        check = ScriptCheck(run=default_check)
        criteria = [Criterion(criterion="the default check passes", check=check)]
    return criteria, why


def script_checks(criteria: list[Criterion]) -> list[tuple[str, ScriptCheck]]:
    """The script checks of `criteria`, with the criterion each verifies."""
    return [(c.criterion, c.check) for c in criteria if isinstance(c.check, ScriptCheck)]
