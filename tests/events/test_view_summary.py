"""The starting worker's task list gives the read model every task (also those no
event of this run names), and the end-of-run summaries render that model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import events as ev
from events import TaskStatus
from events.view import SystemView

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
W = ev.Source(role=ev.Role.WORKER, instance="w:1")
MERGE = ev.Source(role=ev.Role.MERGE, instance="m:1")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(t: float, *tasks: tuple[str, TaskStatus, int, str | None]) -> ev.LoopStarted:
    return ev.LoopStarted(
        source=W,
        loop="l1",
        ts=at(t),
        agent="a",
        pid=1,
        host="h",
        tasks_total=len(tasks),
        tasks=[ev.TaskSnapshot(id=i, status=s, attempts=n, last_result=r) for i, s, n, r in tasks],
        max_attempts=2,
    )


def test_a_starting_workers_task_list_is_the_views_and_keeps_what_only_events_know() -> None:
    view = SystemView.from_events(
        [
            ev.TaskClaimed(
                source=W,
                loop="l1",
                ts=at(0),
                task_id="T2",
                attempt=1,
                commit="c" * 40,
                branch="b",
                base="d" * 40,
            ),
            ev.TaskFailed(source=W, loop="l1", ts=at(1), task_id="GONE", attempt=1, reason="x"),
            ev.TaskHeld(source=W, loop="l1", ts=at(2), task_id="T3", reason="file overlap"),
            started(
                3,
                ("T1", TaskStatus.MERGED, 0, "merged as abc"),  # in an earlier run
                ("T2", TaskStatus.PENDING, 0, None),  # its claim is with the gate
                ("T3", TaskStatus.BLOCKED, 2, "max attempts"),  # the file's verdict wins
                ("T4", TaskStatus.FAILED, 1, "checks failed"),  # no event of this run
            ),
        ]
    )
    tasks = view.loops["l1"].tasks
    assert list(tasks) == ["T1", "T2", "T3", "T4"]  # the file's order; GONE is gone
    assert [t.status for t in tasks.values()] == [
        TaskStatus.MERGED,
        TaskStatus.CLAIMED,
        TaskStatus.BLOCKED,
        TaskStatus.FAILED,
    ]
    assert (tasks["T4"].attempts, tasks["T4"].reason) == (1, "checks failed")
    assert view.loops["l1"].max_attempts == 2
    # An older worker says no list: the view keeps what it knows.
    view.apply(
        ev.LoopStarted(source=W, loop="l1", ts=at(4), agent="a", pid=1, host="h", tasks_total=4)
    )
    assert list(view.loops["l1"].tasks) == ["T1", "T2", "T3", "T4"]
