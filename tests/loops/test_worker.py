"""The loop worker against the real bus (fakeredis and Redis), a real git repo and the
`script:` agent. The test plays the gate and the merge queue by publishing verdicts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import events as ev
from bus import RedisBus
from infra.git import git
from loops.books import SpecBook
from loops.driver import WorkerExit, run_worker
from loops.runners import make_runner
from loops.service import WorkerService
from loops.spec import parse_spec
from tests.conftest import wait_until

GATE = ev.Source(role=ev.Role.GATE, instance="test-gate")
OPERATOR = ev.Source(role=ev.Role.OPERATOR, instance="test")

SPEC = """
goal: "Greet"
tasks:
  - id: hello
    title: "Write hello.py"
    description: "Create hello.py printing hi"
    acceptance_criteria:
      - criterion: "hello.py runs"
        check: {type: script, run: "python hello.py"}
  - id: bye
    title: "Write bye.py"
    description: "Create bye.py"
    acceptance_criteria:
      - criterion: "bye.py runs"
        check: {type: script, run: "python bye.py"}
"""


@dataclass
class Harness:
    bus: RedisBus
    repo: Path
    service: WorkerService
    book: SpecBook
    stop: threading.Event
    thread: threading.Thread
    result: list[WorkerExit]

    def events(self, etype: str) -> list[ev.Event]:
        return [e for _, e in self.bus.replay(types={etype})]

    def wait_event(self, etype: str, n: int = 1, **match: object) -> ev.Event:
        def found() -> ev.Event | None:
            hits = [
                e for e in self.events(etype) if all(getattr(e, k) == v for k, v in match.items())
            ]
            return hits[n - 1] if len(hits) >= n else None

        return wait_until(found, timeout=15)

    def transcripts(self) -> str:
        root = self.book.state_dir / "logs" / "transcripts"
        return "\n".join(p.read_text() for p in sorted(root.glob("*iter*.log")))

    def gate(self, claim: ev.TaskClaimed, passed: bool, output: str = "") -> None:
        common = dict(
            source=GATE,
            task_id=claim.task_id,
            commit=claim.commit,
            attempt=claim.attempt,
            **claim.caused(),
        )
        if passed:
            self.bus.publish(ev.VerificationPassed(criteria=[], **common))  # type: ignore[arg-type]
            self.bus.publish(
                ev.MergeCompleted(
                    source=GATE,
                    task_id=claim.task_id,
                    commit=claim.commit,
                    merged_commit=claim.commit,
                    main_before="x" * 40,
                    loop=claim.loop,
                )
            )
        else:
            result = ev.CriterionResult(
                criterion="hello.py runs",
                kind="script",
                passed=False,
                command="python hello.py",
                exit_code=1,
                output_tail=output,
            )
            self.bus.publish(
                ev.VerificationFailed(
                    verdict=ev.VerificationVerdict.CHECKS_FAILED,
                    reason="1 of 1 criteria failed",
                    criteria=[result],
                    **common,
                )
            )  # type: ignore[arg-type]


@pytest.fixture
def make_harness(bus: RedisBus, tmp_path: Path) -> Iterator[object]:
    started: list[Harness] = []

    def make(script: dict[str, object], spec: str = SPEC, max_iterations: int = 10) -> Harness:
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("demo\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "init")
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump(script))
        book = SpecBook(
            parse_spec(spec), repo / "SPEC.yaml", repo / ".loops" / "state", max_iterations
        )
        runner = make_runner(f"script:{tmp_path / 'agent.yaml'}")
        service = WorkerService(bus, book, runner, repo, heartbeat_s=0.2)
        stop = threading.Event()
        result: list[WorkerExit] = []
        thread = threading.Thread(
            target=lambda: result.append(
                run_worker(service.worker, service.poll, stop, idle_block_ms=50)
            ),
            daemon=True,
        )
        harness = Harness(bus, repo, service, book, stop, thread, result)
        thread.start()
        started.append(harness)
        return harness

    yield make
    for h in started:
        h.stop.set()
        h.thread.join(timeout=10)


def test_claim_is_not_a_verdict_task_passes_only_on_merge(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {
                        "write": {"hello.py": "print('hi')\n"},
                        "reply": "Done. <promise>hello done</promise>",
                    }
                ],
                "bye": [
                    {"write": {"bye.py": "print('bye')\n"}, "reply": "<promise>bye done</promise>"}
                ],
            }
        }
    )
    claim = h.wait_event("task.claimed", task_id="hello")
    assert isinstance(claim, ev.TaskClaimed)
    assert claim.branch == "loop/spec" and len(claim.commit) == 40
    assert git(h.repo, "show", f"{claim.commit}:hello.py") == "print('hi')"
    # Claimed but not merged: not passed, and the loop does not move on.
    finished = h.wait_event("iteration.finished", task_id="hello")
    assert isinstance(finished, ev.IterationFinished)
    assert finished.outcome is ev.IterationOutcome.CLAIMED and finished.changed_files == [
        "hello.py"
    ]
    assert h.book.record("hello").status.value == "pending"
    assert not h.events("task.passed")
    h.gate(claim, passed=True)
    passed = h.wait_event("task.passed", task_id="hello")
    assert passed.correlation_id == claim.correlation_id
    state = json.loads(h.book.state_path.read_text())
    assert state["tests"][0]["status"] == "passed" and state["summary"]["passed"] == 1
    # Then the next task, from main.
    h.wait_event("task.claimed", task_id="bye")


def test_failed_verification_costs_an_attempt_and_feeds_the_next_prompt(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {
                        "write": {"hello.py": "raise SystemExit(1)\n"},
                        "reply": "<promise>done</promise>",
                    },
                    {
                        "write": {"hello.py": "print('hi')\n"},
                        "reply": "fixed <promise>done</promise>",
                    },
                ]
            }
        }
    )
    first = h.wait_event("task.claimed", task_id="hello")
    assert isinstance(first, ev.TaskClaimed)
    h.gate(first, passed=False, output="Traceback: SystemExit: 1 FROM-THE-GATE")
    h.wait_event("task.failed", task_id="hello")
    second = h.wait_event("task.claimed", 2, task_id="hello")
    assert isinstance(second, ev.TaskClaimed)
    assert second.attempt == 2 and second.commit != first.commit
    assert h.book.record("hello").attempts == 1
    assert "FROM-THE-GATE" in h.transcripts().split("iteration 2")[-1]
    # A late duplicate of the first verdict changes nothing.
    h.gate(first, passed=False, output="stale")
    h.gate(second, passed=True)
    h.wait_event("task.passed", task_id="hello")
    assert h.book.record("hello").attempts == 1


def test_blocked_question_answer_reaches_next_prompt(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {"reply": "BLOCKED: should hello.py print 'hi' or 'hello'?"},
                    {"write": {"hello.py": "print('hello')\n"}, "reply": "<promise>done</promise>"},
                ]
            }
        }
    )
    raised = h.wait_event("escalation.raised", task_id="hello")
    assert isinstance(raised, ev.EscalationRaised)
    assert raised.kind is ev.EscalationKind.QUESTION and "print 'hi' or 'hello'" in raised.question
    h.wait_event("task.blocked", task_id="hello")
    h.bus.publish(
        ev.EscalationAnswered(
            source=OPERATOR,
            loop="spec",
            escalation_id=raised.escalation_id,
            answer="print 'hello', ANSWER-MARK",
            by="test",
        )
    )
    h.wait_event("escalation.delivered", escalation_id=raised.escalation_id)
    h.wait_event("task.claimed", task_id="hello")
    assert "ANSWER-MARK" in h.transcripts().split("iteration 2")[-1]


def test_usage_limit_waits_and_does_not_count(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {"fail": "usage_limit", "retry_after": 0.5},
                    {"write": {"hello.py": "print('hi')\n"}, "reply": "<promise>done</promise>"},
                ]
            }
        },
        max_iterations=1,
    )
    limited = h.wait_event("iteration.finished", task_id="hello")
    assert isinstance(limited, ev.IterationFinished)
    assert limited.failure is ev.FailureKind.USAGE_LIMIT and not limited.counted
    assert limited.retry_at is not None
    beat = h.wait_event("loop.heartbeat", status=ev.LoopStatus.WAITING)
    assert isinstance(beat, ev.LoopHeartbeat) and beat.waiting_until is not None
    # With -n 1 the one counted iteration is still available after the wait.
    claim = h.wait_event("task.claimed", task_id="hello")
    assert claim.ts >= limited.retry_at


def test_commands_are_obeyed_and_acknowledged(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness({"tasks": {"hello": [{"reply": "still working"}]}}, max_iterations=1000)
    h.wait_event("iteration.finished", task_id="hello")
    pause = ev.LoopPause(source=OPERATOR, loop="spec")
    h.bus.publish(pause)
    h.wait_event("command.acknowledged", command_id=pause.id)
    h.wait_event("loop.heartbeat", status=ev.LoopStatus.PAUSED)
    hint = ev.TaskHint(
        source=OPERATOR, loop="spec", task_id="hello", text="HINT-MARK look at README"
    )
    reset = ev.TaskReset(source=OPERATOR, loop="spec", task_id="hello", hint="RESET-HINT")
    resume = ev.LoopResume(source=OPERATOR, loop="spec")
    h.bus.publish_many([hint, reset, resume])
    ack = h.wait_event("command.acknowledged", command_id=reset.id)
    assert isinstance(ack, ev.CommandAcknowledged) and "reset" in ack.detail
    h.wait_event("command.acknowledged", command_id=resume.id)
    before = len(h.events("iteration.started"))
    wait_until(lambda: len(h.events("iteration.started")) > before + 1, timeout=15)
    latest = h.transcripts()
    assert "HINT-MARK" in latest and "RESET-HINT" in latest
    stop = ev.LoopStop(source=OPERATOR, loop="spec", reason="operator")
    h.bus.publish(stop)
    h.wait_event("command.acknowledged", command_id=stop.id)
    stopped = h.wait_event("loop.stopped")
    assert isinstance(stopped, ev.LoopStopped) and stopped.reason == "operator"


def test_max_attempts_blocks_task_and_its_dependents(make_harness) -> None:  # type: ignore[no-untyped-def]
    spec = SPEC.replace('    description: "Create bye.py"', '    description: "Create bye.py"')
    h = make_harness(
        {"default": [{"reply": "<promise>done</promise>"}]}, spec=spec, max_iterations=2
    )
    h.book.max_attempts = 2
    for n in (1, 2):
        claim = h.wait_event("task.claimed", n, task_id="hello")
        assert isinstance(claim, ev.TaskClaimed)
        h.gate(claim, passed=False, output="nope")
    blocked = h.wait_event("task.blocked", task_id="hello")
    assert "max attempts" in blocked.reason  # type: ignore[attr-defined]
    assert h.book.record("hello").status.value == "blocked"


def test_invalid_hand_edit_is_reported_and_ignored_valid_one_taken_up(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness({"default": [{"reply": "thinking"}]}, max_iterations=1000)
    h.wait_event("iteration.finished")
    good = h.book.state_path.read_text()
    h.book.state_path.write_text('{"tests": [{"id": "hello", "status": "done-ish"}]}')
    rejected = h.wait_event("state.rejected")
    assert isinstance(rejected, ev.StateRejected)
    assert any("status" in p for p in rejected.problems)
    assert h.thread.is_alive()
    # A valid edit (the seed's runbook: block a task by hand) is taken up.
    data = json.loads(good)
    data["tests"][0]["status"] = "blocked"
    h.book.state_path.write_text(json.dumps(data))
    wait_until(lambda: h.book.record("hello").status.value == "blocked", timeout=10)
    h.wait_event("iteration.started", task_id="bye")


def test_reset_keeps_history_and_a_hint_gated_step_waits_for_it(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {"reply": "looking around"},
                    {
                        "when_prompt": "# Answers and hints",
                        "write": {"hello.py": "print('hi')\n"},
                        "reply": "<promise>done</promise>",
                    },
                ]
            }
        },
        max_iterations=1000,
    )
    # Without a hint the agent stays stuck on step 1, however many runs.
    wait_until(lambda: len(h.events("iteration.finished")) >= 3, timeout=15)
    assert not h.events("task.claimed")
    reset = ev.TaskReset(source=OPERATOR, loop="spec", task_id="hello", hint="edit hello.py")
    h.bus.publish(reset)
    h.wait_event("task.claimed", task_id="hello")
    assert h.service.worker.state.tasks["hello"].iterations >= 3
    assert "edit hello.py" in h.transcripts().split("# Answers and hints")[-1]


def test_secrets_never_reach_transcripts_or_evidence(make_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret = "sk-ant-api03-" + "Z" * 40
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    h = make_harness(
        {"tasks": {"hello": [{"reply": f"my key is {secret}, still working"}]}}, max_iterations=1000
    )
    h.bus.publish(
        ev.TaskHint(source=OPERATOR, loop="spec", task_id="hello", text=f"use the key {secret}")
    )
    wait_until(lambda: "use the key" in h.transcripts(), timeout=15)
    assert secret not in h.transcripts()
    finished = h.events("iteration.finished")
    assert finished and all(secret not in e.model_dump_json() for e in finished)


def test_outage_backs_off_and_retries_without_counting(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {"fail": "outage", "detail": "529 overloaded"},
                    {"write": {"hello.py": "print('hi')\n"}, "reply": "<promise>done</promise>"},
                ]
            }
        },
        max_iterations=1,
    )
    outage = h.wait_event("iteration.finished", task_id="hello")
    assert isinstance(outage, ev.IterationFinished)
    assert outage.failure is ev.FailureKind.OUTAGE and not outage.counted
    assert outage.retry_at is not None and outage.retry_at > outage.ts
    # -n 1: the one counted iteration is still there for the retry after the back-off.
    claim = h.wait_event("task.claimed", task_id="hello")
    assert claim.ts >= outage.retry_at


def test_health_json_keeps_the_seed_shape(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness({"default": [{"reply": "working"}]}, max_iterations=1000)
    path = h.book.state_dir / "health.json"
    wait_until(
        lambda: path.exists() and json.loads(path.read_text()).get("current_test"), timeout=15
    )
    health = json.loads(path.read_text())
    assert {"loop_name", "status", "current_test", "progress", "last_heartbeat", "pid"} <= set(
        health
    )
    assert health["status"] in {"starting", "running", "stopped", "error"}
    assert health["progress"] == {"passed": 0, "total": 2}
    assert health["last_heartbeat"].endswith("Z")


def test_a_held_task_stops_iterating_until_released(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness(
        {"tasks": {"hello": [{"reply": "working on hello"}], "bye": [{"reply": "working on bye"}]}},
        max_iterations=1000,
    )
    h.wait_event("iteration.finished", task_id="hello")
    pm = ev.Source(role=ev.Role.PM, instance="test")
    h.bus.publish(
        ev.TaskHeld(source=pm, loop="spec", task_id="hello", reason="overlap with loop-x")
    )
    h.wait_event("iteration.started", task_id="bye")
    held_at = len([e for e in h.events("iteration.started") if e.task_id == "hello"])  # type: ignore[attr-defined]
    wait_until(lambda: len(h.events("iteration.started")) > held_at + 3, timeout=15)
    assert len([e for e in h.events("iteration.started") if e.task_id == "hello"]) == held_at  # type: ignore[attr-defined]
    h.bus.publish(ev.TaskReleased(source=pm, loop="spec", task_id="hello", reason="merged"))
    h.wait_event("iteration.started", held_at + 1, task_id="hello")


def test_state_files_never_hold_a_secret(make_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Invariant 7 for what the harness writes: worker.json (history, failure reports,
    hints), test-state.json (lastResult) and health.json."""
    pg = "pg-Very-Secret-Value-42"
    key = "sk-ant-api03-" + "Q" * 40
    monkeypatch.setenv("PGPASSWORD", pg)
    leak = f"PGPASSWORD={pg} ANTHROPIC={key}"
    h = make_harness(
        {
            "tasks": {
                "hello": [
                    {
                        "write": {"hello.py": "print('hi')\n"},
                        "reply": f"{leak} <promise>done</promise>",
                    },
                    {"reply": f"still {leak}"},
                ]
            }
        },
        max_iterations=1000,
    )
    claim = h.wait_event("task.claimed", task_id="hello")
    assert isinstance(claim, ev.TaskClaimed)
    h.bus.publish(ev.TaskHint(source=OPERATOR, loop="spec", task_id="hello", text=f"try {leak}"))
    h.bus.publish(
        ev.VerificationFailed(
            source=GATE,
            task_id="hello",
            commit=claim.commit,
            attempt=claim.attempt,
            verdict=ev.VerificationVerdict.CHECKS_FAILED,
            reason=f"check printed {leak}",
            criteria=[
                ev.CriterionResult(
                    criterion="hello.py runs",
                    kind="script",
                    passed=False,
                    command="env",
                    exit_code=1,
                    output_tail=f"env: {leak}",
                )
            ],
            **claim.caused(),
        )
    )
    h.wait_event("task.failed", task_id="hello")
    h.wait_event("iteration.finished", 2, task_id="hello")
    worker_json = h.service.worker.store.path
    health = h.book.state_dir / "health.json"
    wait_until(lambda: health.exists(), timeout=15)
    files = {p: p.read_text() for p in (worker_json, h.book.state_path, health)}
    assert "check printed" in files[h.book.state_path]  # lastResult is there, redacted
    assert "env:" in files[worker_json] and "try" in files[worker_json]
    for path, text in files.items():
        assert pg not in text and key not in text, path
