"""The worker as a state machine: every phase change of a task is a transition of
`TaskRuntime` (one table), and a task blocked by another records which (typed), so a
reset of that one unblocks it (not a comparison of display text)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import events as ev
from loops import reactions
from loops.books import HarnessBook
from loops.project import load_project
from loops.runners.command import CommandRunner
from loops.runtime import TRANSITIONS, IllegalTransition, Phase, TaskRuntime
from loops.worker import LoopWorker
from loops.workspace import Workspace, git

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ev.Source(role=ev.Role.OPERATOR, instance="test")


def test_a_task_goes_from_its_start_to_merged_through_the_table() -> None:
    rt = TaskRuntime()
    rt.start_attempt("corr-1")
    assert rt.phase is Phase.WORKING and rt.correlation_id == "corr-1"
    rt.claim("c" * 40)
    assert rt.phase is Phase.CLAIMED and rt.claim_commit == "c" * 40
    rt.wait_on_person("e-1")  # the gate asks for a sign-off
    assert rt.phase is Phase.WAITING_HUMAN and rt.question is None
    rt.verified()
    assert rt.phase is Phase.VERIFIED and rt.escalation_id is None
    rt.wait_on_person("e-2", resume=Phase.CONFLICT)  # the merge queue asks
    rt.resume_after_answer()
    assert rt.phase is Phase.CONFLICT and rt.resume is None
    rt.work_on_conflicts("main's ops.py")
    rt.claim("d" * 40)
    rt.merged()
    assert rt.phase is Phase.DONE


def test_transitions_the_table_does_not_allow_are_refused() -> None:
    done = TaskRuntime(phase=Phase.DONE)
    with pytest.raises(IllegalTransition, match="claim from done"):
        done.claim("c" * 40)
    with pytest.raises(IllegalTransition, match="verified from done"):
        done.verified()
    with pytest.raises(IllegalTransition):
        TaskRuntime(phase=Phase.WORKING).start_attempt("x")  # one attempt at a time
    with pytest.raises(IllegalTransition):
        TaskRuntime().answered()  # nothing asked
    never_started = TaskRuntime(phase=Phase.WAITING_HUMAN, escalation_id="e-1")
    never_started.answered()
    assert never_started.phase is Phase.IDLE and never_started.escalation_id is None


def test_only_the_transitions_write_a_phase() -> None:
    """Every `.phase = ...` in the worker's code is in `loops/runtime.py`, and every
    transition method there is in the table."""
    writers = []
    for path in sorted((ROOT / "loops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                if any(isinstance(t, ast.Attribute) and t.attr == "phase" for t in elts):
                    writers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert [w.split(":")[0] for w in writers] == ["loops/runtime.py"], writers
    for name in TRANSITIONS:
        assert callable(getattr(TaskRuntime, name, None)), name


@pytest.fixture
def worker(tmp_path: Path) -> tuple[LoopWorker, list[ev.Event]]:
    """A loop of two tasks, X2 depending on X1, one attempt each; no agent runs."""
    root = tmp_path / "repo"
    (root / "loop-x" / "specs").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    tests = [
        {"id": "X1", "status": "pending"},
        {"id": "X2", "status": "pending", "dependsOn": "X1"},
    ]
    (root / "loop-x" / "specs" / "test-state.json").write_text(json.dumps({"tests": tests}))
    config = {"name": "loop-x", "specs_dir": "loop-x/specs", "max_attempts": 1}
    (root / "loop-x" / "config.json").write_text(json.dumps(config))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    book = HarnessBook(load_project(root).loop("loop-x"))
    published: list[ev.Event] = []
    w = LoopWorker(
        book,
        CommandRunner("true"),
        Workspace(root, "loop-x", "main"),
        published.append,
        state_file=tmp_path / "w.json",
    )
    return w, published


def test_a_dependent_blocked_by_a_task_is_unblocked_by_its_reset(
    worker: tuple[LoopWorker, list[ev.Event]],
) -> None:
    w, published = worker
    w.fail_attempt("X1", "verification failed: 1 of 1 criteria failed")
    assert w.book.record("X1").status.value == "blocked"
    assert w.book.record("X2").status.value == "blocked"
    assert w.state.tasks["X2"].blocked_by == "X1"
    blocked = [e for e in published if isinstance(e, ev.TaskBlocked) and e.task_id == "X2"]
    assert blocked and blocked[0].blocked_by == "X1"
    # A person changes X2's note by hand: the typed record still says who blocked it.
    w.book.update("X2", last_result="waiting for X1 (see the runbook)")
    reactions.handle(w, ev.TaskReset(source=OPERATOR, loop="loop-x", task_id="X1"))
    assert w.book.record("X1").status.value == "pending"
    assert w.book.record("X2").status.value == "pending"
    assert w.state.tasks["X2"].blocked_by is None


def test_a_task_blocked_for_its_own_reasons_stays_blocked_on_a_reset_of_another(
    worker: tuple[LoopWorker, list[ev.Event]],
) -> None:
    w, _ = worker
    monitor = ev.Source(role=ev.Role.MONITOR, instance="test-monitor")
    reactions.handle(
        w,
        ev.MonitorAction(
            source=monitor,
            loop="loop-x",
            task_id="X2",
            action=ev.MonitorActionKind.BLOCK_TASK,
            rule="repeated_failure",
            reason="the same failure three times",
            incident_id="i-1",
        ),
    )
    assert w.book.record("X2").status.value == "blocked"
    assert w.state.tasks["X2"].blocked_by is None
    reactions.handle(w, ev.TaskReset(source=OPERATOR, loop="loop-x", task_id="X1"))
    assert w.book.record("X2").status.value == "blocked"


@pytest.mark.parametrize("gates_question", [False, True])
def test_a_persons_skip_blocks_the_task_and_abort_stops_the_loop(
    worker: tuple[LoopWorker, list[ev.Event]], gates_question: bool
) -> None:
    """The same two decisions whoever asked: the loop's agent, or another role."""
    w, published = worker

    def ask(task_id: str, eid: str) -> None:
        rt = w.state.task(task_id)
        rt.start_attempt(f"corr-{eid}")
        if gates_question:
            rt.claim("c" * 40)
            rt.wait_on_person(eid, resume=Phase.CLAIMED)
        else:
            rt.ask(eid, "hi or hello?")

    def answer(eid: str, decision: ev.Decision) -> None:
        reactions.handle(
            w,
            ev.EscalationAnswered(
                source=OPERATOR, escalation_id=eid, answer="", decision=decision, by="me"
            ),
        )

    ask("X1", "e-1")
    answer("e-1", ev.Decision.SKIP)
    assert w.book.record("X1").status.value == "blocked"
    assert w.state.tasks["X1"].escalation_id is None
    assert any(
        isinstance(e, ev.TaskBlocked) and e.reason == "skipped by a person" for e in published
    )
    assert w.stop_requested is None
    ask("X2", "e-2")
    answer("e-2", ev.Decision.ABORT)
    assert w.stop_requested == "aborted by a person"
    assert w.state.tasks["X2"].escalation_id is None
