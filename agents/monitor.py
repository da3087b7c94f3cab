"""The monitor: keeps each loop's health, finds stuck or dead loops, unblocks them.

`Monitor.handle(event)` folds an event in and returns the events to publish;
`Monitor.tick(now)` runs the time-based rules. Which rule leads to which action, and
when a person is asked instead, is the policy's (`agents/default-policy.yaml`).

Commands it publishes, and what it expects of the worker side:
restart -> `loop.stop` restart=True; reset -> `task.reset` with a hint; refine ->
`task.hint` (or an approval escalation); pause -> `loop.pause`; block -> a
`monitor.action` with action=block_task and the task id (the worker marks that task
blocked and moves on). Every action is a `monitor.action` with an incident id.

An incident is one loop + rule + task + the event that started it. The store (Redis)
remembers which incidents were acted on, so the monitor never acts twice on one, even
across its own restarts; its view of the loops is rebuilt by replaying the stream.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypedDict

from agents.health import Finding, LoopHealth, PidAlive
from agents.policy import DEATH_RULES, Policy, Rule, RulePolicy, load_policy
from agents.refiner import RefineFailed, Refiner, RefineRequest
from agents.store import Store
from events import (
    Decision,
    EscalationAnswered,
    EscalationDelivered,
    EscalationKind,
    EscalationRaised,
    Event,
    LoopPause,
    LoopResume,
    LoopStop,
    MonitorAction,
    MonitorActionKind,
    Role,
    Severity,
    Source,
    TaskHint,
    TaskReset,
    short_id,
    utcnow,
)

Clock = Callable[[], datetime]
A = MonitorActionKind

# Events the monitor needs (for `subscribe(types=...)` and the warm-up replay).
MONITOR_TYPES = (
    "loop.started",
    "loop.heartbeat",
    "loop.stopped",
    "task.started",
    "task.failed",
    "task.reset",
    "iteration.finished",
    "monitor.action",
    "escalation.answered",
)

SEEN_IDS = 200_000  # dedupe window (the stream keeps about 100k entries)
_APPROVE_WORDS = {"approve", "approved", "yes", "y", "ok", "apply"}


class _Env(TypedDict):
    source: Source
    loop: str | None
    causation_id: str | None


def local_pid_alive(host: str, pid: int) -> bool | None:
    """Whether `pid` runs on this host; None for another host's process."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Monitor:
    """Health per loop, detection rules, and the auto-unblock policy."""

    role = Role.MONITOR
    types = MONITOR_TYPES

    def __init__(
        self,
        store: Store,
        policy: Policy | None = None,
        *,
        refiner: Refiner | None = None,
        clock: Clock = utcnow,
        pid_alive: PidAlive = local_pid_alive,
        source: Source | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or load_policy()
        self.refiner = refiner
        self.clock = clock
        self.pid_alive = pid_alive
        self.source = source or Source(role=Role.MONITOR)
        self.loops: dict[str, LoopHealth] = {}
        self.started_at = clock()  # staleness is judged from here at the earliest
        self._seq = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.horizon: datetime | None = None

    # ----------------------------------------------------------------- input

    def observe(self, event: Event) -> bool:
        """Fold `event` into the loops' health without acting. False if seen before."""
        if event.id in self._seen:
            return False
        self._seen[event.id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if self.horizon is not None and event.ts < self.horizon:
            return False  # older than the warm-up window: history, not evidence
        self._seq += 1
        if event.loop is not None:
            health = self.loops.get(event.loop)
            if health is None:
                health = self.loops[event.loop] = LoopHealth(event.loop)
            health.observe(event, self._seq)
        return True

    def warm_up(self, events: Iterable[Event], since: datetime | None = None) -> int:
        """Rebuild the loops' health from past events (a replay of the stream).
        Events older than `since` that arrive later (a new consumer group reads the
        stream from its start) are ignored."""
        self.horizon = since
        return sum(1 for e in events if self.observe(e))

    def handle(self, event: Event) -> list[Event]:
        """Fold one event in; act on what the event-driven rules find now."""
        if not self.observe(event):
            return []
        if isinstance(event, EscalationAnswered):
            return self._answered(event)
        if event.loop is None or event.loop not in self.loops:
            return []
        now = self.clock()
        found = self._findings([self.loops[event.loop]], now)
        # Deaths are judged in tick(), across all loops at once (mass death).
        return self._act_all([f for f in found if f.rule not in DEATH_RULES], now)

    def tick(self, now: datetime) -> list[Event]:
        """Run every rule on every loop, including the time-based ones."""
        found = self._findings(list(self.loops.values()), now)
        deaths = [f for f in found if f.rule in DEATH_RULES]
        out = self._mass_death(deaths, now)
        if out is not None:
            return out + self._act_all([f for f in found if f.rule not in DEATH_RULES], now)
        return self._act_all(found, now)

    # ----------------------------------------------------------------- rules

    def _findings(self, loops: list[LoopHealth], now: datetime) -> list[Finding]:
        t = self.policy.thresholds
        out: list[Finding] = []
        for h in loops:
            out += h.findings(now, t, self.pid_alive, watched_since=self.started_at)
        return out

    def _mass_death(self, deaths: list[Finding], now: datetime) -> list[Event] | None:
        """One critical escalation instead of restarts when many loops die at once."""
        if not deaths:
            return None
        t = self.policy.thresholds
        fresh = [f for f in deaths if self.store.get(f"acted:{f.incident_id}") is None]
        stamp = now.timestamp()
        for f in fresh:
            self.store.mark("deaths", f"{f.loop}|{f.incident_id}", stamp)
        recent = self.store.marked_since("deaths", stamp - t.mass_death_window_s)
        dead = sorted({m.split("|", 1)[0] for m in recent})
        current = self.store.doc_get("mass", "current")
        active = current is not None and stamp - float(current["last_at"]) <= t.mass_death_window_s
        if len(dead) < t.mass_death_count and not active:
            return None
        out: list[Event] = []
        if not active:
            incident = (
                "i-" + hashlib.sha1(f"mass|{stamp}|{','.join(dead)}".encode()).hexdigest()[:12]
            )
            current = {"incident_id": incident, "since": stamp, "last_at": stamp, "loops": dead}
            reason = (
                f"{len(dead)} loops died within {t.mass_death_window_s:g}s "
                f"({', '.join(dead)}): not restarting them one by one"
            )
            esc = short_id("e")
            out += [
                MonitorAction(
                    source=self.source,
                    action=A.ESCALATE,
                    rule=Rule.MASS_DEATH.value,
                    reason=reason,
                    incident_id=incident,
                ),
                EscalationRaised(
                    source=self.source,
                    escalation_id=esc,
                    kind=EscalationKind.INCIDENT,
                    severity=Severity.CRITICAL,
                    question=f"{reason}. Check the machine(s) and restart the loops.",
                    options=["retry", "abort"],
                ),
            ]
            self.store.doc_put("escalations", esc, {"kind": "mass", "loops": dead})
        assert current is not None
        current["last_at"] = stamp
        self.store.doc_put("mass", "current", current)
        for f in fresh:  # absorbed: these loops are left to the person
            self.store.claim(f"acted:{f.incident_id}", f"mass:{current['incident_id']}")
        return out

    # ----------------------------------------------------------------- actions

    def _act_all(self, findings: list[Finding], now: datetime) -> list[Event]:
        """At most one new action per loop per evaluation: the most specific finding
        that is new. The action resets the loop's evidence, so the others go too."""
        out: list[Event] = []
        done: set[str] = set()
        for f in findings:
            if f.loop in done:
                continue
            acted = self._act(f, now)
            if acted:
                done.add(f.loop)
                out += acted
        return out

    def _act(self, f: Finding, now: datetime) -> list[Event]:
        rp = self.policy.for_rule(f.rule)
        scope = f"{f.loop}|{f.rule}|{f.task_id or '-'}"
        record = self.store.doc_get("incidents", f.incident_id)
        if record is not None or self.store.get(f"acted:{f.incident_id}") is not None:
            return self._maybe_escalate_late(f, rp, record, scope, now)
        if self.store.get(f"escalated:{scope}") is not None:
            # A person was already asked about this loop, rule and task.
            self.store.claim(f"acted:{f.incident_id}", "suppressed")
            return []
        if not self.store.claim(f"acted:{f.incident_id}", now.isoformat()):
            return []  # another monitor instance took it
        count = int(self.store.get(f"count:{scope}") or 0)
        if count >= rp.escalate_after.actions:
            out = self._escalate(f, rp, scope, tried=count)
            action = A.ESCALATE
        else:
            self.store.incr(f"count:{scope}")
            out = self._do(rp.action, f, rp, scope)
            action = rp.action
        self.store.doc_put(
            "incidents",
            f.incident_id,
            {
                "scope": scope,
                "action": action.value,
                "at": now.timestamp(),
                "escalated": action == A.ESCALATE,
            },
        )
        for e in out:
            self.observe(e)  # our own actions set the loop's evidence barrier now
        return out

    def _maybe_escalate_late(
        self,
        f: Finding,
        rp: RulePolicy,
        record: dict[str, object] | None,
        scope: str,
        now: datetime,
    ) -> list[Event]:
        """The incident is still open `escalate_after.seconds` after the action: ask."""
        after = rp.escalate_after.seconds
        if record is None or after is None or record.get("escalated"):
            return []
        if now.timestamp() - float(str(record["at"])) < after:
            return []
        if not self.store.claim(f"late:{f.incident_id}"):
            return []
        record["escalated"] = True
        self.store.doc_put("incidents", f.incident_id, record)
        if self.store.get(f"escalated:{scope}") is not None:
            return []
        late = Finding(
            f.loop,
            f.rule,
            f.task_id,
            f.started_by,
            f"{f.reason}, still after {after:g}s",
            f.hint,
            f.evidence,
        )
        out = self._escalate(late, rp, scope, tried=int(self.store.get(f"count:{scope}") or 1))
        for e in out:
            self.observe(e)
        return out

    def _action(self, kind: A, f: Finding, hint: str | None = None) -> MonitorAction:
        return MonitorAction(
            source=self.source,
            loop=f.loop,
            causation_id=f.started_by,
            action=kind,
            rule=f.rule.value,
            reason=f.reason,
            incident_id=f.incident_id,
            task_id=f.task_id,
            hint=hint,
        )

    def _do(self, kind: A, f: Finding, rp: RulePolicy, scope: str) -> list[Event]:
        env = _Env(source=self.source, loop=f.loop, causation_id=f.started_by)
        reason = f"monitor: {f.rule.value}: {f.reason}"
        if kind in (A.RESET_TASK, A.REFINE_TASK, A.BLOCK_TASK) and f.task_id is None:
            kind = A.RESTART_WORKER  # nothing to reset without a task: start afresh
        if kind == A.RESTART_WORKER:
            return [self._action(kind, f), LoopStop(**env, reason=reason, restart=True)]
        if kind == A.RESET_TASK:
            assert f.task_id is not None
            return [self._action(kind, f, f.hint), TaskReset(**env, task_id=f.task_id, hint=f.hint)]
        if kind == A.PAUSE_LOOP:
            return [self._action(kind, f), LoopPause(**env, reason=reason)]
        if kind == A.BLOCK_TASK:
            return [self._action(kind, f)]
        if kind == A.REFINE_TASK:
            return self._refine(f, rp, scope)
        return self._escalate(f, rp, scope, tried=0)

    def _refine(self, f: Finding, rp: RulePolicy, scope: str) -> list[Event]:
        assert f.task_id is not None
        if self.refiner is None:
            return self._escalate(f, rp, scope, tried=0, note="no model is configured to refine it")
        try:
            proposal = self.refiner.refine(RefineRequest(f.loop, f.task_id, f.reason, f.evidence))
        except RefineFailed as exc:
            return self._escalate(f, rp, scope, tried=0, note=f"refining it failed: {exc.reason}")
        act = self._action(A.REFINE_TASK, f, proposal)
        if self.policy.refine.apply:
            hint = TaskHint(
                source=self.source,
                loop=f.loop,
                causation_id=f.started_by,
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
            EscalationRaised(
                source=self.source,
                loop=f.loop,
                causation_id=f.started_by,
                escalation_id=esc,
                kind=EscalationKind.APPROVAL,
                severity=rp.severity,
                question=question,
                task_id=f.task_id,
                options=["approve", "reject"],
            ),
        ]

    def _escalate(
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
            self._action(A.ESCALATE, f),
            EscalationRaised(
                source=self.source,
                loop=f.loop,
                causation_id=f.started_by,
                escalation_id=esc,
                kind=EscalationKind.INCIDENT,
                severity=rp.severity,
                question=question,
                task_id=f.task_id,
                options=["retry", "skip", "abort"],
            ),
        ]
        if then is not None:
            out += self._do(then, f, rp, scope)
        return out

    # ----------------------------------------------------------------- answers

    def _answered(self, event: EscalationAnswered) -> list[Event]:
        doc = self.store.doc_get("escalations", event.escalation_id)
        if doc is None or not self.store.claim(f"answered:{event.escalation_id}"):
            return []
        loop, task = doc.get("loop"), doc.get("task_id")
        env = _Env(
            source=self.source, loop=None if loop is None else str(loop), causation_id=event.id
        )
        out: list[Event] = []
        words = event.answer.strip().lower()
        if doc["kind"] == "refine":
            approved = event.decision == Decision.APPROVE or (
                event.decision is None and words in _APPROVE_WORDS
            )
            if approved:
                out.append(TaskHint(**env, task_id=str(task), text=str(doc["proposal"])))
        elif doc["kind"] == "incident" and event.decision in (None, Decision.RETRY):
            scope = str(doc["scope"])
            self.store.delete(f"escalated:{scope}", f"count:{scope}")
            text = event.answer.strip() or None
            if text and text.lower() == "retry":
                text = None
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
