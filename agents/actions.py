"""What the monitor does about a finding: the events that carry out an action
(restart, reset with a hint, refine, pause, block, escalate), and what it does with a
person's answer to its own escalations.

The worker side is expected to obey: `loop.stop` restart=True (stop, then start again;
a supervisor restarts a dead worker), `task.reset` (its hint goes into the next prompt),
`loop.pause` / `loop.resume`, `task.hint`, a `monitor.action` with action=block_task
(mark that task blocked and move on to the next one), and `iteration.abort` (kill the
named agent run's process group; with retry=True run the iteration again with the hint).
"""

from __future__ import annotations

from typing import TypedDict

from agents.answers import fit, intents, is_bare, read_by_rules
from agents.health import Finding
from agents.policy import Policy, RulePolicy
from agents.refiner import RefineFailed, Refiner, RefineRequest
from events import (
    Decision,
    EscalationAnswered,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    IterationAbort,
    LoopPause,
    LoopResume,
    LoopStop,
    MonitorAction,
    MonitorActionKind,
    Source,
    TaskHint,
    TaskReset,
    short_id,
)
from infra.store import Store

A = MonitorActionKind
# The options of the monitor's own escalations, by the kind it records.
_OPTIONS: dict[str, tuple[list[str], EscalationKind]] = {
    "refine": (["approve", "reject"], EscalationKind.APPROVAL),
    "incident": (["retry", "skip", "abort"], EscalationKind.INCIDENT),
    "mass": (["retry", "abort"], EscalationKind.INCIDENT),
}


class _Env(TypedDict):
    source: Source
    loop: str | None
    causation_id: str | None


class Responder:
    """Builds the events of the monitor's actions; remembers its escalations."""

    def __init__(
        self, store: Store, policy: Policy, refiner: Refiner | None, source: Source
    ) -> None:
        self.store = store
        self.policy = policy
        self.refiner = refiner
        self.source = source

    def action(self, kind: A, f: Finding, hint: str | None = None) -> MonitorAction:
        return MonitorAction(
            source=self.source,
            loop=f.loop,
            causation_id=f.cause,
            action=kind,
            rule=f.rule.value,
            reason=f.reason,
            incident_id=f.incident_id,
            task_id=f.task_id,
            hint=hint,
        )

    def do(self, kind: A, f: Finding, rp: RulePolicy, scope: str) -> list[Event]:
        env = _Env(source=self.source, loop=f.loop, causation_id=f.cause)
        reason = f"monitor: {f.rule.value}: {f.reason}"
        if kind == A.ABORT_ITERATION and f.agent_started_at is None:
            kind = A.RESET_TASK  # no agent run to abort: reset the task with the hint
        if kind in (A.RESET_TASK, A.REFINE_TASK, A.BLOCK_TASK, A.ABORT_ITERATION) and (
            f.task_id is None
        ):
            kind = A.RESTART_WORKER  # nothing to reset without a task: start afresh
        if kind == A.RESTART_WORKER:
            return [self.action(kind, f), LoopStop(**env, reason=reason, restart=True)]
        if kind == A.RESET_TASK:
            assert f.task_id is not None
            return [self.action(kind, f, f.hint), TaskReset(**env, task_id=f.task_id, hint=f.hint)]
        if kind == A.ABORT_ITERATION:
            return [self.action(kind, f, f.hint), self.abort(f, reason, retry=True)]
        if kind == A.PAUSE_LOOP:
            return [self.action(kind, f), LoopPause(**env, reason=reason)]
        if kind == A.BLOCK_TASK:
            return [self.action(kind, f)]
        if kind == A.REFINE_TASK:
            return self.refine(f, rp, scope)
        return self.escalate(f, rp, scope, tried=0)

    def abort(self, f: Finding, reason: str, *, retry: bool) -> IterationAbort:
        """The command that kills `f`'s agent run (and, with `retry`, runs it again)."""
        assert f.task_id is not None
        return IterationAbort(
            source=self.source,
            loop=f.loop,
            causation_id=f.cause,
            task_id=f.task_id,
            iteration=f.iteration,
            agent_started_at=f.agent_started_at,
            reason=reason,
            hint=f.hint if retry else None,
            retry=retry,
            incident_id=f.incident_id,
        )

    def kill(self, f: Finding) -> list[Event]:
        """Kill a silent run of a task a person was already asked about; block the task."""
        if f.task_id is None:
            return []
        reason = f"monitor: {f.rule.value}: {f.reason} (a person was asked already)"
        return [
            self.action(A.ABORT_ITERATION, f),
            self.abort(f, reason, retry=False),
            self.action(A.BLOCK_TASK, f),
        ]

    def refine(self, f: Finding, rp: RulePolicy, scope: str) -> list[Event]:
        assert f.task_id is not None
        if self.refiner is None:
            return self.escalate(f, rp, scope, tried=0, note="no model is configured to refine it")
        try:
            proposal = self.refiner.refine(RefineRequest(f.loop, f.task_id, f.reason, f.evidence))
        except RefineFailed as exc:
            return self.escalate(f, rp, scope, tried=0, note=f"refining it failed: {exc.reason}")
        act = self.action(A.REFINE_TASK, f, proposal)
        if self.policy.refine.apply:
            hint = TaskHint(
                source=self.source,
                loop=f.loop,
                causation_id=f.cause,
                task_id=f.task_id,
                text=proposal,
            )
            return [act, hint]
        esc = short_id("e")
        self.store.doc_put(
            "escalations",
            esc,
            {
                "kind": "refine",
                "loop": f.loop,
                "task_id": f.task_id,
                "proposal": proposal,
                "scope": scope,
            },
        )
        question = (
            f"Task {f.task_id} of loop {f.loop} keeps failing ({f.reason}). A model proposes "
            f"this rewrite:\n\n{proposal}\n\nApprove to send it to the loop as guidance?"
        )
        return [
            act,
            self._ask(f, rp, esc, EscalationKind.APPROVAL, question, ["approve", "reject"]),
        ]

    def escalate(
        self, f: Finding, rp: RulePolicy, scope: str, *, tried: int, note: str = ""
    ) -> list[Event]:
        self.store.claim(f"escalated:{scope}")
        esc = short_id("e")
        then = rp.on_escalate if rp.on_escalate in (A.PAUSE_LOOP, A.BLOCK_TASK) else None
        if then == A.BLOCK_TASK and f.task_id is None:
            then = A.PAUSE_LOOP
        self.store.doc_put(
            "escalations",
            esc,
            {
                "kind": "incident",
                "scope": scope,
                "loop": f.loop,
                "task_id": f.task_id,
                "then": then,
                "rule": f.rule.value,
                "incident_id": f.incident_id,
            },
        )
        tried_text = f" after {tried} automatic {rp.action.value} action(s)" if tried else ""
        question = f"Loop {f.loop}: {f.reason}{tried_text}."
        if note:
            question += f" ({note})"
        if then == A.PAUSE_LOOP:
            question += " The loop is paused."
        elif then == A.BLOCK_TASK:
            question += f" Task {f.task_id} is blocked; the loop moves on."
        question += (
            " Answer retry to let the monitor try again, or text for the loop's next prompt."
        )
        out: list[Event] = [
            self.action(A.ESCALATE, f),
            self._ask(f, rp, esc, EscalationKind.INCIDENT, question, ["retry", "skip", "abort"]),
        ]
        if f.agent_started_at is not None and f.task_id is not None:
            # A silent run is still hanging: kill it, and do not run it again on its own.
            out.append(self.abort(f, f"monitor: {f.rule.value}: {f.reason}", retry=False))
        if then is not None:
            out += self.do(then, f, rp, scope)
        return out

    def _ask(
        self,
        f: Finding,
        rp: RulePolicy,
        esc: str,
        kind: EscalationKind,
        question: str,
        options: list[str],
    ) -> EscalationRaised:
        """The monitor's question `esc` to a person about finding `f`."""
        return EscalationRaised(
            source=self.source,
            loop=f.loop,
            causation_id=f.cause,
            escalation_id=esc,
            kind=kind,
            severity=rp.severity,
            question=question,
            task_id=f.task_id,
            options=options,
        )

    # ----------------------------------------------------------------- answers

    def answered(self, event: EscalationAnswered) -> list[Event]:
        doc = self.store.doc_get("escalations", event.escalation_id)
        if doc is None:
            return []
        options, kind = _OPTIONS.get(str(doc["kind"]), _OPTIONS["incident"])
        if event.decision is not None:
            decision = fit(event.decision, options)  # "approve" to retry/skip/abort: retry
        else:
            decision = read_by_rules(event.answer, options, kind)
        if decision is None:
            # Words the rules cannot read as approve or reject: the human interface
            # publishes its reading (or asks again); act on that.
            return []
        if not self.store.claim(f"answered:{event.escalation_id}"):
            return []
        loop, task = doc.get("loop"), doc.get("task_id")
        env = _Env(
            source=self.source, loop=None if loop is None else str(loop), causation_id=event.id
        )
        out: list[Event] = []
        if doc["kind"] == "refine":
            if decision == Decision.APPROVE:
                out.append(TaskHint(**env, task_id=str(task), text=str(doc["proposal"])))
        elif doc["kind"] == "mass" and decision == Decision.RETRY:
            self.store.doc_delete("mass", "current")
            for name in doc.get("loops", []):
                out.append(
                    LoopStop(
                        source=self.source,
                        loop=str(name),
                        causation_id=event.id,
                        reason=f"escalation {event.escalation_id}: restart after mass death",
                        restart=True,
                    )
                )
        elif doc["kind"] == "incident" and decision == Decision.ABORT and loop:
            out.append(
                LoopStop(**env, reason=f"escalation {event.escalation_id}: aborted by {event.by}")
            )
        elif doc["kind"] == "incident" and decision == Decision.SKIP and task:
            if doc.get("then") != A.BLOCK_TASK.value:
                out.append(
                    MonitorAction(
                        **env,
                        action=A.BLOCK_TASK,
                        rule=str(doc.get("rule", "escalation")),
                        reason=f"skipped by {event.by} (escalation {event.escalation_id})",
                        incident_id=str(doc.get("incident_id", event.escalation_id)),
                        task_id=str(task),
                    )
                )
        elif doc["kind"] == "incident" and decision == Decision.RETRY:
            scope = str(doc["scope"])
            self.store.delete(f"escalated:{scope}", f"count:{scope}")
            text = event.answer.strip() or None
            if text and is_bare(text) and intents(text):
                text = None  # "retry", "ok": a decision, not a hint
            if doc.get("then") == A.PAUSE_LOOP.value:
                out.append(LoopResume(**env, reason=f"escalation {event.escalation_id} answered"))
            if task is not None and (doc.get("then") == A.BLOCK_TASK.value or text):
                out.append(TaskReset(**env, task_id=str(task), hint=text))
        out.append(
            EscalationDelivered(
                **env,
                escalation_id=event.escalation_id,
                task_id=None if task is None else str(task),
            )
        )
        return out
