"""The end-of-run summaries of `loops up` (and `loops worker`) and `loops run`: a
rendering of the read model, so a task's verdict there is its status in `loops status`
and its JSON, whatever the loops' objects or state files say by then.

A task counts as done only when merged (`TaskStatus.MERGED`): the merge's events of
this run, or the `passed` of a starting worker's task list, which that worker has
checked against the merge record first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from events import EscalationKind, TaskStatus
from events.view.escalations import Escalation, by_urgency
from events.view.models import LoopView, TaskView
from events.view.system import SystemView
from events.view.text import clean

EXIT_OK, EXIT_NOT_MERGED = 0, 1
SHOWN = 1000  # characters of a reason or question, made safe for a terminal (`clean`)


def ran(view: SystemView, loop: str, since: datetime | None = None) -> LoopView | None:
    """`loop` as the view has it, if its worker started (at or after `since`)."""
    found = view.loops.get(loop)
    if found is None or found.started is None:
        return None
    return found if since is None or found.started >= since else None


def left(loop: LoopView) -> list[TaskView]:
    """The loop's tasks not merged, in the order of its task list."""
    return [t for t in loop.tasks.values() if t.status is not TaskStatus.MERGED]


def all_merged(view: SystemView, loops: Mapping[str, datetime | None]) -> bool:
    """Every task of every one of `loops` (name: started since) merged; a loop that did
    not start, or has no task, is not done."""
    runs = [ran(view, name, since) for name, since in loops.items()]
    return bool(runs) and all(r is not None and r.tasks and not left(r) for r in runs)


def out_of_attempts(loop: LoopView, task: TaskView) -> bool:
    """Failed or blocked with no attempt left: no run takes it up again until reset."""
    spent = loop.max_attempts is not None and task.attempts >= loop.max_attempts
    return spent and task.status in (TaskStatus.BLOCKED, TaskStatus.FAILED)


def open_escalations(view: SystemView) -> list[Escalation]:
    """The escalations waiting for a person, most severe first."""
    return by_urgency(e for e in view.escalation_records.values() if e.status.is_open)


def up_summary(view: SystemView, loops: Mapping[str, datetime | None]) -> tuple[int, list[str]]:
    """`loops up`'s summary of `loops` (name: the time its worker was last started,
    whose run the summary tells), and its exit code: 0 only if every task merged."""
    lines = ["", "Summary:"]
    for name, since in loops.items():
        loop = ran(view, name, since)
        if loop is None:
            lines.append(f"  {name}: its worker did not start")
            continue
        rest = left(loop)
        merged = len(loop.tasks) - len(rest)
        lines.append(f"  {name}: {merged}/{len(loop.tasks)} tasks verified and merged")
        for task in rest:
            why = f" — {clean(task.reason, SHOWN)}" if task.reason else ""
            lines.append(f"    {task.task_id}: {task.status.value}{why}")
            if out_of_attempts(loop, task):
                lines.append(
                    f"      to retry it: `loops reset {name} {task.task_id} --no-wait` (a "
                    "running loop takes it at once, a stopped one when it starts again)"
                )
    lines += view.spend.lines()
    escalations = open_escalations(view)
    if escalations:
        lines.append("  Open escalations (answer with `loops answer ID TEXT`):")
        for esc in escalations:
            where = f"{esc.loop}/{esc.task_id}" if esc.task_id else esc.loop or "-"
            lines.append(
                f"    {esc.id} [{esc.severity}] {clean(where, SHOWN)}: {clean(esc.question, SHOWN)}"
            )
    ok = all_merged(view, loops)
    lines.append("All tasks verified and merged." if ok else "Not every task merged (exit 1).")
    return (EXIT_OK if ok else EXIT_NOT_MERGED), lines


def run_summary(view: SystemView, loop: str, branch: str, rerun: str) -> tuple[int, list[str]]:
    """`loops run`'s summary of its one loop and its exit code: on success one line,
    else a line per task left (with how to go on) and per open question."""
    found = ran(view, loop)
    if found is not None and all_merged(view, {loop: None}):
        iterations = sum(view.counts.iterations.get(loop, {}).values())
        return EXIT_OK, [
            f"All tasks verified and merged into {branch!r} — done in {iterations} iteration(s)."
        ]
    escalations = open_escalations(view)
    waiting = {e.task_id for e in escalations}
    lines = []
    for task in left(found) if found is not None else []:
        lines.append(
            f"Task {task.task_id!r} is {task.status.value}"
            + (f" ({task.attempts} failed attempts)" if task.attempts else "")
            + (f": {clean(task.reason, SHOWN)}" if task.reason else "")
            + (
                ""
                if task.task_id in waiting
                else f" — run `{rerun}` to go on (what it tried is kept)"
            )
        )
    for esc in escalations:
        if esc.kind is EscalationKind.SIGNOFF:
            lines.append(f"Needs a person's sign-off ({esc.id}): {clean(esc.question, SHOWN)}")
        else:
            lines.append(f"Open question {esc.id}: {clean(esc.question, SHOWN)}")
    if escalations:
        lines.append(f"Answer with `loops answer ID TEXT` in this directory, then run `{rerun}`.")
    return EXIT_NOT_MERGED, lines
