"""The end-of-run summaries as renderings of the read model, and the starting worker's
task list that gives the model every task (also those no event of this run names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import events as ev
from events import TaskStatus
from events.types import LAST_RESULT_CHARS
from events.view import SystemView
from events.view.summary import run_summary, up_summary

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


def _beat(passed: int, total: int) -> ev.LoopHeartbeat:
    return ev.LoopHeartbeat(
        source=W,
        loop="l1",
        ts=at(3.5),
        status=ev.LoopStatus.RUNNING,
        pid=1,
        host="h",
        interval_s=5.0,
        passed=passed,
        total=total,
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
    # The status table's count is the list's, whatever a heartbeat copies of the file.
    view.apply(_beat(passed=0, total=9))
    assert (view.loops["l1"].passed, view.loops["l1"].total) == (1, 4)
    # An older worker says no list: the view keeps what it knows.
    view.apply(
        ev.LoopStarted(source=W, loop="l1", ts=at(4), agent="a", pid=1, host="h", tasks_total=4)
    )
    assert list(view.loops["l1"].tasks) == ["T1", "T2", "T3", "T4"]
    # As it stops, the worker lists a task added to its file by hand meanwhile.
    listed = started(5, ("T1", TaskStatus.MERGED, 0, None), ("HAND", TaskStatus.PENDING, 0, None))
    view.apply(
        ev.LoopStopped(
            source=W,
            loop="l1",
            ts=at(6),
            status=ev.LoopStatus.STOPPED,
            reason="idle",
            tasks=listed.tasks,
        )
    )
    assert list(view.loops["l1"].tasks) == ["T1", "HAND"]
    assert (view.loops["l1"].passed, view.loops["l1"].total) == (1, 2)


def test_the_up_summary_lists_each_task_left_with_how_to_go_on() -> None:
    view = SystemView.from_events(
        [
            started(
                1,
                ("T1", TaskStatus.PENDING, 0, None),
                ("T2", TaskStatus.FAILED, 2, "checks failed"),  # out of attempts
                ("T3", TaskStatus.PENDING, 0, None),
            ),
            ev.MergeCompleted(
                source=MERGE,
                loop="l1",
                ts=at(2),
                task_id="T1",
                commit="c" * 40,
                merged_commit="e" * 40,
                main_before="d" * 40,
            ),
            ev.EscalationRaised(
                source=W,
                loop="l1",
                ts=at(3),
                task_id="T3",
                escalation_id="e-1",
                kind=ev.EscalationKind.QUESTION,
                severity=ev.Severity.MEDIUM,
                question="ints or floats?",
            ),
            ev.TaskBlocked(
                source=W,
                loop="l1",
                ts=at(4),
                task_id="T3",
                reason="waiting on e-1",
                waiting_on_human=True,
            ),
        ]
    )
    code, lines = up_summary(view, {"l1": T0, "never": T0})
    assert code == 1
    assert lines == [
        "",
        "Summary:",
        "  l1: 1/3 tasks verified and merged",
        "    T2: failed — checks failed",
        "      to retry it: `loops reset l1 T2 --no-wait` (a running loop takes it at once, "
        "a stopped one when it starts again)",
        "    T3: blocked — waiting on e-1",
        "  never: its worker did not start",
        "  Open escalations (answer with `loops answer ID TEXT`):",
        "    e-1 [medium] l1/T3: ints or floats?",
        "Not every task merged (exit 1).",
    ]
    code, lines = run_summary(view, "l1", "main", "loops run")
    assert code == 1
    assert lines == [
        "Task 'T2' is failed (2 failed attempts): checks failed — run `loops run` to go on "
        "(what it tried is kept)",
        "Task 'T3' is blocked: waiting on e-1",
        "Open question e-1: ints or floats?",
        "Answer with `loops answer ID TEXT` in this directory, then run `loops run`.",
    ]


def test_done_means_every_task_merged_in_a_run_of_this_summary() -> None:
    merged = [started(1, ("T1", TaskStatus.MERGED, 0, "merged as e"))]
    view = SystemView.from_events(merged)
    assert up_summary(view, {"l1": T0})[0] == 0
    assert up_summary(view, {"l1": T0})[1][-1] == "All tasks verified and merged."
    assert run_summary(view, "l1", "main", "loops run") == (
        0,
        ["All tasks verified and merged into 'main' — done in 0 iteration(s)."],
    )
    # Not started since this run began (an earlier run's events), or no task at all.
    assert up_summary(view, {"l1": at(2)})[0] == 1
    assert up_summary(SystemView.from_events([started(1)]), {"l1": T0})[0] == 1


def test_what_an_agent_wrote_reaches_the_terminal_escaped_and_a_listed_reason_is_cut() -> None:
    view = SystemView.from_events([started(1, ("T1", TaskStatus.FAILED, 1, "\x1b[2Jgone"))])
    for lines in (up_summary(view, {"l1": T0})[1], run_summary(view, "l1", "main", "x")[1]):
        assert "\x1b" not in "".join(lines) and any("\\x1b[2Jgone" in ln for ln in lines)
    long = ev.TaskSnapshot(id="T1", status=TaskStatus.FAILED, last_result="x" * 10_000)
    assert long.last_result is not None and len(long.last_result) == LAST_RESULT_CHARS
