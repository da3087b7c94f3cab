"""Every answer moves its task on: free text is read as a decision (rules, then the
judge model), published for the gate and the merge queue, or the question is asked
again. Includes the invariant over event logs: no task waits on a person without an
open question."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.answers import AnthropicAnswerReader, fit, intents, read_by_rules
from agents.escalations import open_escalations_on
from agents.human import HumanAgent, HumanConfig
from agents.monitor import Monitor
from agents.policy import parse_policy
from bus import RedisBus
from events import (
    Decision,
    EscalationAcknowledged,
    EscalationAnswered,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    LoopStop,
    MonitorAction,
    MonitorActionKind,
    Role,
    Severity,
    Source,
    TaskHint,
    TaskReset,
)
from events.view.escalations import EscalationStatus, fold_escalations
from infra.store import Store
from tests.agents.helpers import WORKER, Clock, iteration
from tests.agents.test_on_bus import Counting, running, settle
from tests.conftest import RedisBackend, wait_until
from tests.fakes.mock_anthropic import MockAnthropic

D = Decision
OP = Source(role=Role.OPERATOR, instance="cli")
GATE = Source(role=Role.GATE, instance="gate:1")
MERGE = Source(role=Role.MERGE, instance="merge:1")
SIGNOFF = ["approve", "reject"]
MERGE_Q = ["retry", "skip"]
INCIDENT = ["retry", "skip", "abort"]

# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("approve", D.APPROVE),
        ("Looks right to me", D.APPROVE),
        ("looks good!", D.APPROVE),
        ("LGTM", D.APPROVE),
        ("yes", D.APPROVE),
        ("ok", D.APPROVE),
        ("Ship it 👍", D.APPROVE),
        ("+1", D.APPROVE),
        ("That's right.", D.APPROVE),
        ("no problems, go ahead", D.APPROVE),
        ("reject", D.REJECT),
        ("no", D.REJECT),
        ("not ok", D.REJECT),
        ("Not OK.", D.REJECT),
        ("don't merge", D.REJECT),
        ("Don\u2019t merge this", D.REJECT),
        ("do not approve", D.REJECT),
        ("looks wrong", D.REJECT),
        ("it doesn't look right", D.REJECT),
        ("this isn't correct", D.REJECT),
        ("I do not think it looks good", D.REJECT),
        ("never merge this", D.REJECT),
        ("the header is wrong, it should say v2", D.REJECT),
        ("👎", D.REJECT),
        ("try again", D.REJECT),  # a retry of a sign-off: reject, the text as the hint
        # Cannot tell: mixed, contrast, a question back, a negated objection, nothing.
        ("ok?", None),
        ("yes, but the button is wrong", None),
        ("looks good but fix the typo", None),
        ("not bad", None),
        ("nothing wrong with it", None),
        ("no, looks good", None),
        ("hmm", None),
        ("the colour of the page", None),
        ("", None),
    ],
)
def test_rules_read_a_sign_off(answer: str, expected: Decision | None) -> None:
    assert read_by_rules(answer, SIGNOFF, EscalationKind.SIGNOFF) == expected


@pytest.mark.parametrize(
    ("answer", "options", "kind", "expected"),
    [
        ("ok", MERGE_Q, EscalationKind.QUESTION, D.RETRY),
        ("go ahead", MERGE_Q, EscalationKind.QUESTION, D.RETRY),
        ("retry", MERGE_Q, EscalationKind.QUESTION, D.RETRY),
        ("skip it", MERGE_Q, EscalationKind.QUESTION, D.SKIP),
        ("don't merge it", MERGE_Q, EscalationKind.QUESTION, D.SKIP),
        ("I rebased it by hand", MERGE_Q, EscalationKind.QUESTION, None),
        ("skip", INCIDENT, EscalationKind.INCIDENT, D.SKIP),
        ("move on", INCIDENT, EscalationKind.INCIDENT, D.SKIP),
        ("stop the loop", INCIDENT, EscalationKind.INCIDENT, D.ABORT),
        ("don't stop", INCIDENT, EscalationKind.INCIDENT, D.RETRY),  # text: a hint
        ("use port 8080", INCIDENT, EscalationKind.INCIDENT, D.RETRY),
        ("ok", INCIDENT, EscalationKind.INCIDENT, D.RETRY),
        ("anything", [], EscalationKind.QUESTION, None),  # no options: text for the loop
        ("approve", ["blue", "green"], EscalationKind.QUESTION, None),
    ],
)
def test_rules_fit_the_questions_options(
    answer: str, options: list[str], kind: EscalationKind, expected: Decision | None
) -> None:
    assert read_by_rules(answer, options, kind) == expected


def test_a_decision_is_always_one_of_the_options() -> None:
    for decision in Decision:
        for options in (SIGNOFF, MERGE_Q, INCIDENT, ["retry", "abort"]):
            got = fit(decision, options)
            assert got is None or got.value in options


@given(st.text(max_size=60))
def test_rules_never_fail_and_never_decide_outside_the_options(text: str) -> None:
    intents(text)
    for options in (SIGNOFF, MERGE_Q, INCIDENT):
        got = read_by_rules(text, options, EscalationKind.SIGNOFF)
        assert got is None or got.value in options


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    ("reply", "options", "expected"),
    [
        ("approve", SIGNOFF, D.APPROVE),
        ("Reject.", SIGNOFF, D.REJECT),
        ("unclear", SIGNOFF, None),
        ("skip", SIGNOFF, None),  # not an option of a sign-off
        ("", SIGNOFF, None),
        ("approve", MERGE_Q, D.RETRY),
    ],
)
def test_the_model_reads_what_the_rules_cannot(
    reply: str,
    options: list[str],
    expected: Decision | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with MockAnthropic(aux_reply=reply) as api:
        reader = AnthropicAnswerReader(api_key="test-key", base_url=api.base_url, model="judge-x")
        try:
            got = reader.read("Does the page look right?", options, "the colours work for me")
        finally:
            reader.close()
        assert got == expected
        [request] = api.requests
        assert request.path.startswith("/v1/messages") and not request.has_tools
        assert request.body["model"] == "judge-x" and reader.name == "model:judge-x"
        text = str(request.body["messages"])
        assert "the colours work for me" in text and ", ".join(options) in text


def test_a_failing_model_cannot_tell() -> None:
    with MockAnthropic([], aux_reply="approve") as api:
        reader = AnthropicAnswerReader(api_key="k", base_url="http://127.0.0.1:9", timeout_s=2)
        try:
            assert reader.read("q", SIGNOFF, "whatever") is None
        finally:
            reader.close()
        assert api.requests == []


# --------------------------------------------------------------------------- the human agent


class FakeReader:
    """A model stand-in: a fixed reading per answer text."""

    name = "model:fake"

    def __init__(self, readings: dict[str, Decision | None] | None = None) -> None:
        self.readings = readings or {}
        self.asked: list[tuple[str, list[str], str]] = []

    def read(self, question: str, options: Sequence[str], answer: str) -> Decision | None:
        self.asked.append((question, list(options), answer))
        return self.readings.get(answer)


def signoff(eid: str, clock: Clock, **kw: Any) -> EscalationRaised:
    fields: dict[str, Any] = {
        "kind": EscalationKind.SIGNOFF,
        "severity": Severity.MEDIUM,
        "question": "Does the login page look right?",
        "task_id": "T1",
        "options": SIGNOFF,
    }
    fields.update(kw)
    return EscalationRaised(
        source=GATE, loop="a", ts=clock.now, escalation_id=eid, correlation_id="c-1", **fields
    )


def answer(eid: str, text: str, **kw: Any) -> EscalationAnswered:
    return EscalationAnswered(source=OP, escalation_id=eid, answer=text, by="ann", **kw)


def test_free_text_to_a_sign_off_is_published_as_a_decision(store: Store, clock: Clock) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(signoff("e-1", clock))
    said = answer("e-1", "Looks right to me")
    [decided] = human.handle(said)
    assert isinstance(decided, EscalationAnswered)
    assert decided.decision == D.APPROVE and decided.answer == "Looks right to me"
    assert decided.interprets == said.id and decided.causation_id == said.id
    assert decided.read_by == "rules" and decided.by == "ann" and decided.task_id == "T1"
    assert decided.loop == "a" and decided.source.role == Role.HUMAN
    esc = human.get("e-1")
    assert esc is not None and esc.status == EscalationStatus.ANSWERED
    assert esc.decision == D.APPROVE and not esc.undecided
    assert human.handle(decided) == []  # its own echo from the bus changes nothing


def test_an_answer_with_a_decision_or_to_a_question_without_options_is_left_alone(
    store: Store, clock: Clock
) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(signoff("e-1", clock))
    assert human.handle(answer("e-1", "fine", decision=D.APPROVE)) == []
    human.handle(signoff("e-2", clock, kind=EscalationKind.QUESTION, options=[]))
    assert human.handle(answer("e-2", "use sqlite")) == []


def test_an_unreadable_answer_asks_again_and_the_question_stays_open(
    store: Store, clock: Clock
) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(signoff("e-1", clock))
    said = answer("e-1", "hmm, the colours")
    [again] = human.handle(said)
    assert isinstance(again, EscalationRaised)
    assert again.escalation_id == "e-1" and again.repeat == 1 and again.reopens == said.id
    assert again.question.startswith(
        "I could not tell whether \u201chmm, the colours\u201d means approve or reject: "
        "answer approve or reject."
    )
    assert "Does the login page look right?" in again.question and again.options == SIGNOFF
    esc = human.get("e-1")
    assert esc is not None and esc.waiting and esc.answer is None
    assert [e.id for e in human.open()] == ["e-1"]
    # A clearer answer now decides it; the question is not prefixed twice.
    later = answer("e-1", "not ok")
    [decided] = human.handle(later)
    assert isinstance(decided, EscalationAnswered) and decided.decision == D.REJECT
    assert fold_escalations([signoff("e-1", clock), said, again, later, decided])[
        "e-1"
    ].decision == (D.REJECT)


def test_a_decision_that_is_not_an_option_is_fitted_or_asked_again(
    store: Store, clock: Clock
) -> None:
    """`loops answer e-1 --decision retry` to a sign-off: the gate acts on approve or
    reject only. Retry is reject with the text as the hint; skip is no answer to it."""
    human = HumanAgent(store, reader=FakeReader(), clock=clock)
    human.handle(signoff("e-1", clock))
    human.handle(signoff("e-2", clock))
    said = answer("e-1", "the form needs a label", decision=D.RETRY)
    [fitted] = human.handle(said)
    assert isinstance(fitted, EscalationAnswered) and fitted.decision == D.REJECT
    assert fitted.interprets == said.id and fitted.answer == "the form needs a label"
    [again] = human.handle(answer("e-2", "", decision=D.SKIP))
    assert isinstance(again, EscalationRaised) and again.question.startswith(
        "skip is not an answer to this question: answer approve or reject."
    )
    assert [e.id for e in human.open()] == ["e-2"]


def test_the_model_is_asked_only_when_the_rules_cannot_tell(store: Store, clock: Clock) -> None:
    reader = FakeReader({"the colours work for me": D.APPROVE})
    human = HumanAgent(store, reader=reader, clock=clock)
    human.handle(signoff("e-1", clock))
    human.handle(signoff("e-2", clock))
    [fast] = human.handle(answer("e-1", "lgtm"))
    assert isinstance(fast, EscalationAnswered) and fast.read_by == "rules"
    assert reader.asked == []
    [slow] = human.handle(answer("e-2", "the colours work for me"))
    assert isinstance(slow, EscalationAnswered) and slow.decision == D.APPROVE
    assert slow.read_by == "model:fake"
    assert reader.asked == [("Does the login page look right?", SIGNOFF, "the colours work for me")]


def test_the_judge_model_path_end_to_end(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MockAnthropic(aux_reply="reject") as api:
        reader = AnthropicAnswerReader(api_key="k", base_url=api.base_url)
        try:
            human = HumanAgent(store, reader=reader, clock=clock)
            human.handle(signoff("e-1", clock))
            [decided] = human.handle(answer("e-1", "the logo overlaps the form"))
        finally:
            reader.close()
    assert isinstance(decided, EscalationAnswered) and decided.decision == D.REJECT
    assert decided.read_by == reader.name


def test_a_redelivered_answer_publishes_the_same_events_again(store: Store, clock: Clock) -> None:
    reader = FakeReader()
    first = HumanAgent(store, reader=reader, clock=clock)
    first.handle(signoff("e-1", clock))
    first.handle(signoff("e-2", clock))
    yes, unsure = answer("e-1", "looks right"), answer("e-2", "meh")
    [decided] = first.handle(yes)
    [again] = first.handle(unsure)
    # Delivered again (a crash before the ack), to the same or a restarted agent.
    second = HumanAgent(store, reader=reader, clock=clock)
    clock.advance(30)
    assert second.handle(yes) == [decided]
    assert second.handle(unsure) == [again]
    assert len(reader.asked) == 1  # read once
    assert second.get("e-2") is not None and second.get("e-2").waiting  # type: ignore[union-attr]


def test_a_late_second_answer_after_a_decision_changes_nothing(store: Store, clock: Clock) -> None:
    human = HumanAgent(store, clock=clock)
    human.handle(signoff("e-1", clock))
    human.handle(answer("e-1", "yes"))
    assert human.handle(answer("e-1", "actually no")) == []
    esc = human.get("e-1")
    assert esc is not None and esc.decision == D.APPROVE


def test_the_reopened_question_is_raised_again_if_nobody_acknowledges_it(
    store: Store, clock: Clock
) -> None:
    human = HumanAgent(store, HumanConfig(reraise_after_s={Severity.MEDIUM: 60.0}), clock=clock)
    human.handle(signoff("e-1", clock))
    [again] = human.handle(answer("e-1", "hmm"))
    assert human.tick(clock.advance(59)) == []
    [third] = human.tick(clock.advance(2))
    assert isinstance(third, EscalationRaised) and third.repeat == 2
    assert third.question == again.question


# --------------------------------------------------------------------------- the monitor's own


def test_the_monitor_reads_answers_to_its_own_questions_the_same_way(
    store: Store, clock: Clock
) -> None:
    policy = parse_policy(
        {"rules": {"no_changes": {"action": "reset_task", "escalate_after": {"actions": 0}}}}
    )
    for text, expect in (
        ("skip it", MonitorActionKind.BLOCK_TASK),
        ("stop the loop", "stop"),
        ("use the v2 API", "reset"),
    ):
        mon = Monitor(Store(store.client, store.base + text, "m"), policy, clock=clock)
        out: list[Event] = []
        for n in (1, 2, 3):
            out += mon.handle(iteration("a", clock.advance(1), n, changed_files=[]))
        [esc] = [e for e in out if isinstance(e, EscalationRaised)]
        got = mon.handle(answer(esc.escalation_id, text))
        if expect == "stop":
            assert any(isinstance(e, LoopStop) and not e.restart for e in got)
        elif expect == "reset":
            [reset] = [e for e in got if isinstance(e, TaskReset)]
            assert reset.hint == "use the v2 API"
        else:
            assert [a.action for a in got if isinstance(a, MonitorAction)] == [expect]


def test_the_monitor_waits_for_the_reading_of_an_unclear_approval(
    store: Store, clock: Clock
) -> None:
    from tests.agents.test_monitor import FakeRefiner, run_iterations, varied

    mon = Monitor(store, clock=clock, refiner=FakeRefiner(), pid_alive=lambda h, p: True)
    out = run_iterations(mon, clock, "a", varied())
    [esc] = [e for e in out if isinstance(e, EscalationRaised)]
    said = answer(esc.escalation_id, "the second step could be smaller")
    assert mon.handle(said) == []  # cannot tell by rules: no action, no claim
    decided = answer(
        esc.escalation_id, said.answer, decision=D.APPROVE, interprets=said.id, read_by="model:x"
    )
    assert [e for e in mon.handle(decided) if isinstance(e, TaskHint)]
    assert mon.handle(decided) == []


# --------------------------------------------------------------------------- the invariant

PHRASES = [
    "approve", "Looks right to me", "not ok", "don't merge", "looks wrong", "hmm", "ok?",
    "yes but no", "retry", "skip it", "stop the loop", "use port 8080", "", "LGTM",
    "the colours work for me", "I rebased it",
]  # fmt: skip
ASKERS = [
    (GATE, EscalationKind.SIGNOFF, SIGNOFF),
    (GATE, EscalationKind.APPROVAL, SIGNOFF),
    (MERGE, EscalationKind.QUESTION, MERGE_Q),
    (Source(role=Role.MONITOR), EscalationKind.INCIDENT, INCIDENT),
    (WORKER, EscalationKind.QUESTION, []),
]


class HashReader:
    """A deterministic 'model': reads some texts, not others."""

    name = "model:hash"

    def read(self, question: str, options: Sequence[str], answer: str) -> Decision | None:
        h = int(hashlib.sha1(answer.encode()).hexdigest(), 16)
        return None if h % 3 == 0 else fit([D.APPROVE, D.REJECT, D.RETRY][h % 3], options)


step = st.one_of(
    st.tuples(st.just("raise"), st.integers(0, len(ASKERS) - 1)),
    st.tuples(
        st.just("answer"),
        st.integers(0, 7),
        st.one_of(st.sampled_from(PHRASES), st.text(max_size=30)),
        st.sampled_from([None, None, None, D.APPROVE, D.REJECT, D.RETRY]),
    ),
    st.tuples(st.just("ack"), st.integers(0, 7)),
    st.tuples(st.just("redeliver"), st.integers(0, 200)),
    st.tuples(st.just("tick"), st.integers(0, 4000)),
    st.tuples(st.just("restart")),
)


def waiting_without_a_question(log: list[Event]) -> list[str]:
    """Escalations whose asker acts only on a decision, answered with none: their task
    waits on a person who has no open question."""
    return [e.id for e in fold_escalations(log).values() if e.undecided]


@given(steps=st.lists(step, max_size=40), with_model=st.booleans())
def test_no_task_ever_waits_on_a_person_without_an_open_question(
    steps: list[tuple[Any, ...]], with_model: bool
) -> None:
    """Random escalations from every asker, answers (free text, decisions, noise),
    acknowledgements, redeliveries of any earlier event, ticks and restarts of the
    human agent. After the agent has handled everything, no escalation with options is
    answered without a decision, the stream's fold and the agent's store agree, and
    every decision is one of its question's options."""
    import fakeredis

    client = fakeredis.FakeRedis()
    clock = Clock()
    reader = HashReader() if with_model else None

    def agent() -> HumanAgent:
        config = HumanConfig(reraise_after_s=dict.fromkeys(Severity, 600.0))
        return HumanAgent(Store(client, "inv", "human"), config, reader=reader, clock=clock)

    human = agent()
    log: list[Event] = []
    raised: list[EscalationRaised] = []

    def publish(*events: Event) -> None:
        queue = deque(events)
        while queue:
            event = queue.popleft()
            log.append(event)
            queue.extend(human.handle(event))

    for s in steps:
        clock.advance(1)
        if s[0] == "raise":
            source, kind, options = ASKERS[s[1]]
            esc = EscalationRaised(
                source=source,
                loop="a",
                ts=clock.now,
                escalation_id=f"e-{len(raised)}",
                kind=kind,
                severity=Severity.MEDIUM,
                question=f"question {len(raised)}?",
                task_id=f"T{len(raised)}",
                options=options,
            )
            raised.append(esc)
            publish(esc)
        elif s[0] == "answer" and raised:
            eid = raised[s[1] % len(raised)].escalation_id
            said = EscalationAnswered(
                source=OP, escalation_id=eid, answer=s[2], decision=s[3], by="p"
            )
            publish(said)
        elif s[0] == "ack" and raised:
            eid = raised[s[1] % len(raised)].escalation_id
            publish(EscalationAcknowledged(source=OP, escalation_id=eid, by="p"))
        elif s[0] == "redeliver" and log:
            event = log[s[1] % len(log)]
            for out in human.handle(event):
                if all(e.id != out.id for e in log):  # else: the same event again, deduped
                    publish(out)
        elif s[0] == "tick":
            publish(*human.tick(clock.advance(s[1])))
        elif s[0] == "restart":
            human = agent()
        assert waiting_without_a_question(log) == []
        assert [e.id for e in human.escalations() if e.undecided] == []
    folded = fold_escalations(log)
    for esc in human.escalations():
        assert folded[esc.id].status == esc.status, esc.id
        assert folded[esc.id].decision == esc.decision, esc.id
    for event in log:
        if isinstance(event, EscalationAnswered) and event.decision is not None:
            options = next(r.options for r in raised if r.escalation_id == event.escalation_id)
            if event.interprets is not None:
                assert event.decision.value in options
    client.close()


# --------------------------------------------------------------------------- on a real bus


def test_on_the_bus_a_gate_that_acts_on_decisions_only_is_never_left_waiting(
    bus: RedisBus, redis_backend: RedisBackend
) -> None:
    """The human agent runs on the bus; a stand-in for the gate does what
    `gates/gate.py` does with answers: act on `decision` (or its fixed words) only,
    then publish `escalation.delivered`."""
    clock = Clock()
    human = Counting(
        HumanAgent(Store(redis_backend.client, redis_backend.prefix, "human"), clock=clock)
    )
    acted: dict[str, Decision] = {}

    def gate(event: Event) -> None:
        if not isinstance(event, EscalationAnswered) or event.escalation_id in acted:
            return
        word = event.answer.strip().lower()
        decision = event.decision or {"approve": D.APPROVE, "reject": D.REJECT}.get(word)
        if decision in (D.APPROVE, D.REJECT):
            acted[event.escalation_id] = decision
            bus.publish(
                EscalationDelivered(
                    source=GATE,
                    loop="a",
                    causation_id=event.id,
                    escalation_id=event.escalation_id,
                    task_id="T1",
                )
            )

    stand_in = bus.subscribe("gate", "g", gate, types={"escalation.answered"})

    def until(cond: Any) -> None:
        """Run the stand-in gate until `cond` holds, then let the human agent settle."""
        wait_until(lambda: (stand_in.poll(block_ms=1), cond())[1])
        settle(human, 3)
        wait_until(lambda: stand_in.poll(block_ms=1) == 0)

    with running(human, bus, clock, "human"):
        bus.publish(signoff("e-1", clock))
        bus.publish(signoff("e-2", clock))
        wait_until(lambda: human.handled >= 2)
        bus.publish(answer("e-1", "Looks right to me", loop="a"))
        bus.publish(answer("e-2", "hmm, the colours", loop="a"))
        until(
            lambda: (
                "e-1" in acted
                and any(isinstance(e, EscalationRaised) and e.reopens for _, e in bus.replay())
            )
        )
        [open_one] = open_escalations_on(bus)
        assert open_one.id == "e-2" and open_one.question.startswith("I could not tell")
        bus.publish(answer("e-2", "don't merge this", loop="a"))
        until(lambda: "e-2" in acted)
    assert acted == {"e-1": D.APPROVE, "e-2": D.REJECT}
    assert open_escalations_on(bus, include_answered=True) == []
    assert waiting_without_a_question([e for _, e in bus.replay()]) == []
