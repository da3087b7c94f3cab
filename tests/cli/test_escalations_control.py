"""`loops escalations`, `loops answer` and the control commands, as real subprocesses
against the real Redis. Control commands are acknowledged by a tiny fake worker."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator

import pytest

import events as ev
from bus import RedisBus
from tests.cli.conftest import System
from tests.cli.sample import W, raised, scenario

OP = ev.Source(role=ev.Role.OPERATOR, instance="op:1")


def published(system: System, etype: str) -> list[ev.Event]:
    return [e for _, e in system.bus.replay(types=[etype])]


def test_escalations_lists_open_ones(system: System) -> None:
    system.bus.publish_many([*scenario(), raised("e-000001", task_id="API-3")])
    system.bus.publish(
        ev.EscalationAnswered(source=OP, escalation_id="e-000001", answer="410", by="ann")
    )
    out = system.loops("escalations", check=True).stdout
    assert "e-1a2b3c  open  high  question  loop-api/API-2" in out
    assert "Q: Should the API return 404 or 410 for deleted items?" in out
    assert "options: 404, 410" in out
    assert "e-000001" not in out
    everything = system.loops("escalations", "--all", check=True).stdout
    assert "e-000001  answered" in everything and "A by ann: 410" in everything
    data = json.loads(system.loops("escalations", "--json", "--all", check=True).stdout)
    assert {e["id"]: e["status"] for e in data} == {"e-1a2b3c": "open", "e-000001": "answered"}


def test_no_open_escalations(system: System) -> None:
    assert system.loops("escalations", check=True).stdout.strip() == "No open escalations."


def test_answer_publishes_escalation_answered_as_the_operator(system: System) -> None:
    system.bus.publish_many(scenario())
    proc = system.loops(
        "answer", "e-1a2b3c", "use", "410", "Gone", "--decision", "retry", check=True
    )
    assert proc.stdout.startswith(
        "answered e-1a2b3c (loop loop-api, task API-2) [retry]: use 410 Gone"
    )
    [answer] = published(system, "escalation.answered")
    assert isinstance(answer, ev.EscalationAnswered)
    assert answer.source.role is ev.Role.OPERATOR
    assert (answer.escalation_id, answer.answer, answer.decision) == (
        "e-1a2b3c",
        "use 410 Gone",
        ev.Decision.RETRY,
    )
    assert (answer.loop, answer.task_id) == ("loop-api", "API-2")
    assert answer.by

    again = system.loops("answer", "e-1a2b3c", "404")
    assert again.returncode == 1
    assert again.stderr.startswith("loops: escalation e-1a2b3c is answered: already answered by")
    assert again.stderr.count("\n") == 1
    assert len(published(system, "escalation.answered")) == 1


def test_answer_unknown_or_expired_id_is_one_line_and_exit_1(system: System) -> None:
    system.bus.publish_many([*scenario(), raised("e-dead00")])
    system.bus.publish(
        ev.EscalationExpired(source=W, escalation_id="e-dead00", reason="task was reset")
    )
    unknown = system.loops("answer", "e-nope", "hi")
    assert unknown.returncode == 1
    assert unknown.stderr == "loops: no escalation 'e-nope' (open: e-1a2b3c)\n"
    expired = system.loops("answer", "e-dead00", "hi")
    assert expired.returncode == 1
    assert (
        expired.stderr
        == "loops: escalation e-dead00 is expired (task was reset); nothing to answer\n"
    )
    assert published(system, "escalation.answered") == []


# ---------------------------------------------------------------------- control


class FakeWorker:
    """Acknowledges every command addressed to its loop, as a loop worker does."""

    def __init__(self, bus: RedisBus, loop: str) -> None:
        self.bus, self.loop = bus, loop
        self.stop = threading.Event()
        self.obeyed: list[ev.Event] = []
        self.cursor = bus.last_id()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for stream_id, event in self.bus.tail(after=self.cursor, block_ms=200):
                self.cursor = stream_id
                if event.is_command and event.loop == self.loop:
                    self.obeyed.append(event)
                    unknown = getattr(event, "task_id", None) == "NOPE"  # as a worker refuses
                    self.bus.publish(
                        ev.CommandAcknowledged(
                            source=ev.Source(role=ev.Role.WORKER, instance="fake-worker:7"),
                            loop=self.loop,
                            command=event.type,
                            command_id=event.id,
                            detail="unknown task NOPE" if unknown else f"ok {event.type}",
                            refused=unknown,
                        )
                    )


@pytest.fixture
def worker(system: System) -> Iterator[FakeWorker]:
    system.bus.publish_many(scenario())
    fake = FakeWorker(system.bus, "loop-api")
    fake.thread.start()
    yield fake
    fake.stop.set()
    fake.thread.join(timeout=5)


@pytest.mark.parametrize(
    ("action", "etype", "says"),
    [
        ("pause", "loop.pause", "paused after its current iteration"),
        ("resume", "loop.resume", "resumed"),
        ("stop", "loop.stop", "stopping after its current iteration"),
    ],
)
def test_control_waits_for_the_workers_acknowledgement(
    system: System, worker: FakeWorker, action: str, etype: str, says: str
) -> None:
    proc = system.loops(action, "loop-api", check=True)
    assert f"loop-api: {says} (acknowledged by fake-worker:7): ok {etype}" in proc.stdout
    [command] = published(system, etype)
    assert command.loop == "loop-api" and command.source.role is ev.Role.OPERATOR
    assert [e.id for e in worker.obeyed] == [command.id]


def test_reset_carries_task_and_hint(system: System, worker: FakeWorker) -> None:
    proc = system.loops("reset", "loop-api", "API-2", "--hint", "use 410", check=True)
    assert "task reset to pending with zero attempts" in proc.stdout
    [command] = published(system, "task.reset")
    assert isinstance(command, ev.TaskReset)
    assert (command.loop, command.task_id, command.hint) == ("loop-api", "API-2", "use 410")
    status = json.loads(system.loops("status", "--json", check=True).stdout)
    assert status["loops"]["loop-api"]["tasks"]["API-2"] == {
        **status["loops"]["loop-api"]["tasks"]["API-2"],
        "status": "pending",
        "attempts": 0,
    }


def test_a_reset_the_worker_refuses_exits_1_in_one_line_and_leaves_no_task(
    system: System, worker: FakeWorker
) -> None:
    proc = system.loops("reset", "loop-api", "NOPE")
    assert proc.returncode == 1
    assert proc.stderr == (
        "loops: loop-api: unknown task NOPE; nothing changed (its tasks: `loops status`)\n"
    )
    status = json.loads(system.loops("status", "--json", check=True).stdout)
    assert "NOPE" not in status["loops"]["loop-api"]["tasks"]


def test_no_acknowledgement_exits_1_and_the_command_stays(system: System) -> None:
    system.bus.publish_many(scenario())
    proc = system.loops("pause", "loop-ui", "--wait", "0.5")
    assert proc.returncode == 1
    assert proc.stderr == (
        "loops: no acknowledgement from loop-ui within 0.5s; the command stays on the stream "
        "and the worker obeys it when it is back\n"
    )
    assert [e.loop for e in published(system, "loop.pause")] == ["loop-ui"]


def test_no_wait_returns_at_once(system: System) -> None:
    system.bus.publish_many(scenario())
    proc = system.loops("stop", "loop-ui", "--no-wait", check=True)
    assert "not waiting" in proc.stdout
    assert len(published(system, "loop.stop")) == 1


def test_unknown_loop_sends_nothing(system: System) -> None:
    system.bus.publish_many(scenario())
    proc = system.loops("pause", "loop-apj")
    assert proc.returncode == 1
    assert (
        proc.stderr
        == "loops: no loop 'loop-apj' on this system (loops: loop-api, loop-ui); nothing sent\n"
    )
    assert published(system, "loop.pause") == []


def test_answer_reads_a_decision_from_plain_words_and_says_how_to_decide_when_it_cannot(
    system: System,
) -> None:
    signoff = ev.EscalationRaised(
        source=W,
        loop="loop-api",
        escalation_id="e-5ign0f",
        kind=ev.EscalationKind.SIGNOFF,
        severity=ev.Severity.MEDIUM,
        question="loop-api/API-2 needs a sign-off: the page looks right",
        task_id="API-2",
        options=["approve", "reject"],
    )
    other = signoff.model_copy(update={"id": ev.new_id(), "escalation_id": "e-0ther1"})
    system.bus.publish_many([signoff, other])
    proc = system.loops("answer", "e-5ign0f", "don't", "merge", "this", check=True)
    assert "[reject]" in proc.stdout
    proc = system.loops("answer", "e-0ther1", "hmm,", "maybe", "later")
    assert proc.returncode == 1
    hints = [ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("  loops answer")]
    assert hints == [
        "loops answer e-0ther1 --decision approve 'hmm, maybe later'",
        "loops answer e-0ther1 --decision reject 'hmm, maybe later'",
    ]
    # The hint works verbatim: the question was left open for it.
    system.loops(*shlex.split(hints[0])[1:], check=True)
    decisions = {
        e.escalation_id: e.decision
        for e in published(system, "escalation.answered")
        if isinstance(e, ev.EscalationAnswered)
    }
    assert decisions == {"e-5ign0f": ev.Decision.REJECT, "e-0ther1": ev.Decision.APPROVE}
