"""The monitor: keeps each loop's health, finds stuck or dead loops, unblocks them.

`Monitor.handle(event)` folds an event in and returns the events to publish;
`Monitor.tick(now)` runs the time-based rules. Which rule leads to which action, and
when a person is asked instead, is the policy's (`agents/default-policy.yaml`).

Commands it publishes, and what it expects of the worker side:
restart -> `loop.stop` restart=True; reset -> `task.reset` with a hint; abort ->
`iteration.abort` (kill the silent agent's process group, retry with the hint); refine ->
`task.hint` (or an approval escalation); pause -> `loop.pause`; block -> a
`monitor.action` with action=block_task and the task id (the worker marks that task
blocked and moves on). Every action is a `monitor.action` with an incident id.

An incident is one loop + rule + task + the event that started it. The store (Redis)
remembers which incidents were acted on, so the monitor never acts twice on one, even
across its own restarts; its view of the loops is rebuilt by replaying the stream.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from agents.actions import Responder
from agents.health import Finding, LoopHealth, PidAlive
from agents.policy import DEATH_RULES, Policy, Rule, RulePolicy, load_policy
from agents.refiner import Refiner
from bus.idempotency import Window
from events import (
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    FailureKind,
    IterationFinished,
    MonitorAction,
    MonitorActionKind,
    Role,
    Severity,
    Source,
    short_id,
    utcnow,
)
from infra.process import pid_alive
from infra.store import Store

Clock = Callable[[], datetime]
A = MonitorActionKind

# Events the monitor needs (for `subscribe(types=...)` and the warm-up replay).
MONITOR_TYPES = (
    "loop.started",
    "loop.heartbeat",
    "loop.stopped",
    "loop.stop",
    "task.started",
    "task.failed",
    "task.reset",
    "iteration.finished",
    "monitor.action",
    "escalation.answered",
)

SEEN_IDS = 200_000  # dedupe window (the stream keeps about 100k entries)


def local_pid_alive(host: str, pid: int) -> bool | None:
    """Whether `pid` runs on this host; None for another host's process."""
    return pid_alive(pid) if host == socket.gethostname() else None


class Monitor:
    """Health per loop, detection rules, and the auto-unblock policy."""

    role = Role.MONITOR
    types = MONITOR_TYPES
    warm_up_window: str | timedelta | None = timedelta(hours=1)

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
        self.respond = Responder(store, self.policy, refiner, self.source)
        self.loops: dict[str, LoopHealth] = {}
        self.started_at = clock()  # staleness is judged from here at the earliest
        self._seq = 0
        self._seen = Window(SEEN_IDS)
        self.horizon: datetime | None = None

    # ----------------------------------------------------------------- input

    def observe(self, event: Event, received: datetime | None = None) -> bool:
        """Fold `event` into the loops' health without acting. False if seen before.
        `received`: the monitor's time of receipt (None for replayed events)."""
        if not self._seen.first_time(event.id):
            return False
        if self.horizon is not None and event.ts < self.horizon:
            return False  # older than the warm-up window: history, not evidence
        self._seq += 1
        if event.loop is not None:
            health = self.loops.get(event.loop)
            if health is None:
                health = self.loops[event.loop] = LoopHealth(event.loop)
            health.observe(event, self._seq, received)
        return True

    def warm_up(self, events: Iterable[Event], since: datetime | None = None) -> int:
        """Rebuild the loops' health from past events (a replay of the stream).
        Events older than `since` that arrive later (a new consumer group reads the
        stream from its start) are ignored."""
        self.horizon = since
        return sum(1 for e in events if self.observe(e))

    def handle(self, event: Event) -> list[Event]:
        """Fold one event in; act on what the event-driven rules find now."""
        now = self.clock()
        if not self.observe(event, received=now):
            return []
        if isinstance(event, EscalationAnswered):
            return self.respond.answered(event)
        if isinstance(event, IterationFinished) and event.failure != FailureKind.TIMEOUT:
            # A run that ended by itself breaks a streak of silent (killed) runs.
            self.store.delete(f"count:{event.loop}|{Rule.SILENT_AGENT}|{event.task_id}")
        if event.loop is None or event.loop not in self.loops:
            return []
        found = self._findings([self.loops[event.loop]], now)
        # Deaths are judged in tick(), across all loops at once (mass death).
        return self._act_all([f for f in found if f.rule not in DEATH_RULES], now)

    def tick(self, now: datetime) -> list[Event]:
        """Run every rule on every loop, including the time-based ones."""
        found = self._findings(list(self.loops.values()), now)
        deaths = [f for f in found if f.rule in DEATH_RULES]
        handled = self._mass_death(deaths, now)
        if handled is None:
            return self._act_all(found, now)
        return handled + self._act_all([f for f in found if f.rule not in DEATH_RULES], now)

    # ----------------------------------------------------------------- rules

    def _findings(self, loops: list[LoopHealth], now: datetime) -> list[Finding]:
        t = self.policy.thresholds
        out: list[Finding] = []
        for h in loops:
            out += h.findings(now, t, self.pid_alive, watched_since=self.started_at)
        return out

    def _mass_death(self, deaths: list[Finding], now: datetime) -> list[Event] | None:
        """One critical escalation instead of restarts when many loops die at once.
        None: no mass death, act on each death; else the events to publish instead."""
        if not deaths:
            return None
        t = self.policy.thresholds
        fresh = [f for f in deaths if self.store.get(f"acted:{f.incident_id}") is None]
        stamp = now.timestamp()
        for f in fresh:
            self.store.mark("deaths", f"{f.loop}|{f.incident_id}", stamp)
        self.store.unmark_before("deaths", stamp - 10 * t.mass_death_window_s)
        recent = self.store.marked_since("deaths", stamp - t.mass_death_window_s)
        dead = sorted({m.split("|", 1)[0] for m in recent})
        current = self.store.doc_get("mass", "current")
        active = current is not None and stamp - float(current["last_at"]) <= t.mass_death_window_s
        if len(dead) < t.mass_death_count and not active:
            return self._hold_for_silent(fresh, dead, now)
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

    def _hold_for_silent(
        self, fresh: list[Finding], dead: list[str], now: datetime
    ) -> list[Event] | None:
        """A crash silences its loops at once, but their last heartbeats were up to an
        interval apart: when the first is stale, the others have only missed one. If
        those could make it a mass death, hold the restarts until they come back or
        go stale too (one interval at most). None: restart now."""
        t = self.policy.thresholds
        silent = [
            h.loop
            for h in self.loops.values()
            if h.loop not in dead and h.silence(now, self.started_at) > 1.0
        ]
        if not fresh or len(dead) + len(silent) < t.mass_death_count:
            return None
        stamp = now.timestamp()
        for f in fresh:
            first = self.store.marked_at("deaths", f"{f.loop}|{f.incident_id}") or stamp
            hb = self.loops[f.loop].heartbeat
            if stamp - first > (hb.interval_s if hb else 0.0):
                return None  # held long enough
        return []

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
        if not rp.enabled:
            return []
        scope = f"{f.loop}|{f.rule}|{f.task_id or '-'}"
        record = self.store.doc_get("incidents", f.incident_id)
        if record is not None or self.store.get(f"acted:{f.incident_id}") is not None:
            return self._maybe_escalate_late(f, rp, record, scope, now)
        if self.store.get(f"escalated:{scope}") is not None:
            # A person was already asked about this loop, rule and task.
            if not self.store.claim(f"acted:{f.incident_id}", "suppressed"):
                return []
            if f.agent_started_at is None:
                return []
            out = self.respond.kill(f)  # but a hung agent is never left running
            for e in out:
                self.observe(e)
            return out
        if not self.store.claim(f"acted:{f.incident_id}", now.isoformat()):
            return []  # another monitor instance took it
        count = int(self.store.get(f"count:{scope}") or 0)
        if count >= rp.escalate_after.actions:
            out = self.respond.escalate(f, rp, scope, tried=count)
            action = A.ESCALATE
        else:
            self.store.incr(f"count:{scope}")
            out = self.respond.do(rp.action, f, rp, scope)
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
        late = replace(f, reason=f"{f.reason}, still after {after:g}s")
        out = self.respond.escalate(
            late, rp, scope, tried=int(self.store.get(f"count:{scope}") or 1)
        )
        for e in out:
            self.observe(e)
        return out
