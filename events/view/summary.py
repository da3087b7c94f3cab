"""The summary `loops up` and `loops run` print when they end, from the read model:
the same counts `loops status` shows, so the two agree by construction."""

from __future__ import annotations

from collections.abc import Iterable

from events.view.escalations import Escalation
from events.view.models import LoopView, TaskStatus
from events.view.system import SystemView
from events.view.text import clean


def loop_line(loop: LoopView) -> str:
    """`name: passed/total tasks verified and merged` (the PASSED column of status)."""
    return f"{loop.name}: {loop.passed}/{loop.total} tasks verified and merged"


def all_merged(view: SystemView, loops: Iterable[str]) -> bool:
    """Every task of each of `loops` merged, as their events say."""
    found = [view.loops.get(name) for name in loops]
    return bool(found) and all(lp is not None and 0 < lp.total <= lp.passed for lp in found)


def summary_lines(
    view: SystemView, loops: Iterable[str], escalations: Iterable[Escalation] = ()
) -> list[str]:
    """Per loop its count and each task that did not merge (with why), then the
    escalations still open."""
    lines: list[str] = []
    for name in loops:
        loop = view.loops.get(name)
        if loop is None:
            continue  # it never started
        lines.append(f"  {loop_line(loop)}")
        for task in loop.tasks.values():
            if task.status is TaskStatus.MERGED:
                continue
            why = f" — {clean(task.reason, 200)}" if task.reason else ""
            lines.append(f"    {task.task_id}: {task.status.value}{why}")
        unseen = loop.total - len(loop.tasks)
        if unseen > 0:
            lines.append(f"    ({unseen} more not started)")
    open_ones = list(escalations)
    if open_ones:
        lines.append("  Open escalations (answer with `loops answer ID TEXT`):")
        for esc in open_ones:
            where = f"{esc.loop}/{esc.task_id}" if esc.task_id else esc.loop or "-"
            lines.append(f"    {esc.id} [{esc.severity}] {where}: {esc.question}")
    return lines
