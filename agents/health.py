"""Each loop's health as the monitor sees it, and the detection rules over it.

Pure: state is folded from events, rules read it with an explicit `now`. The monitor
(`agents/monitor.py`) decides what to do about what these rules find.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from difflib import SequenceMatcher

from agents.policy import Rule, Thresholds
from events import (
    Event,
    FailureKind,
    IterationFinished,
    IterationOutcome,
    LoopHeartbeat,
    LoopStarted,
    LoopStatus,
    LoopStop,
    LoopStopped,
    MonitorAction,
    TaskFailed,
    TaskReset,
    TaskStarted,
)
from events.view.models import is_stale, silent_intervals

PidAlive = Callable[[str, int], bool | None]
"""(host, pid) -> alive? None when it cannot tell (another host)."""

_WORKER_EVENTS = (LoopHeartbeat, LoopStarted, TaskStarted, IterationFinished, TaskFailed)


@dataclass(frozen=True)
class Finding:
    """A rule that holds for a loop now. Same incident <=> same `key`."""

    loop: str
    rule: Rule
    task_id: str | None
    started_by: str  # id of the event that started the incident
    reason: str
    hint: str | None = None
    evidence: tuple[str, ...] = ()
    caused_by: str | None = None  # the event to name as the cause, when not `started_by`
    iteration: int | None = None  # the agent run a silent-agent finding is about
    agent_started_at: datetime | None = None

    @property
    def cause(self) -> str:
        """The id for `causation_id` of the events acting on this finding."""
        return self.caused_by or self.started_by

    @property
    def key(self) -> str:
        return f"{self.loop}|{self.rule}|{self.task_id or '-'}|{self.started_by}"

    @property
    def incident_id(self) -> str:
        return "i-" + hashlib.sha1(self.key.encode()).hexdigest()[:12]


@dataclass
class Observation:
    """One piece of per-iteration evidence (an iteration, or a failed attempt)."""

    seq: int
    event_id: str
    task_id: str
    iteration: bool
    counted: bool
    changed: bool = False
    failure: str | None = None  # "kind: text", raw
    signature: tuple[str, str] | None = None  # (kind, normalised text)
    reply_chars: int = 0
    denials: int = 0
    commands: tuple[str, ...] = ()


_NOISE = re.compile(r"0x[0-9a-f]+|[0-9a-f]{7,}|\d+")


def normalise(text: str) -> str:
    """A failure text without the numbers, hashes and spacing that vary between runs."""
    return " ".join(_NOISE.sub("#", text.lower()).split())[-400:]


def similar(a: tuple[str, str], b: tuple[str, str], ratio: float) -> bool:
    if a[0] != b[0]:
        return False
    return a[1] == b[1] or SequenceMatcher(None, a[1], b[1]).ratio() >= ratio


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _commands_of(run: list[Observation], label: str, width: int) -> str:
    """` LABEL: the last five commands of `run`.` (clipped to `width`), '' if none ran."""
    commands = [c for o in run for c in o.commands][-5:]
    return f" {label}: {_clip('; '.join(commands), width)}." if commands else ""


@dataclass
class LoopHealth:
    """What the monitor knows about one loop."""

    loop: str
    last_seen: datetime | None = None  # when its latest event arrived (observer's clock)
    last_ts: datetime | None = None  # the latest event's own time (the worker's clock)
    heartbeat: LoopHeartbeat | None = None
    heartbeat_seen: datetime | None = None  # when `heartbeat` arrived (observer's clock)
    # (None when it came from a replay: the next live heartbeat is an interval away)
    agent_run: tuple[datetime, str] | None = None  # (agent_started_at, first heartbeat id)
    host: str | None = None
    pid: int | None = None
    stopped: LoopStopped | None = None
    task_id: str | None = None
    last_iteration: IterationFinished | None = None
    restart_asked: datetime | None = None  # a `loop.stop restart=True` not yet followed by a start
    barrier: int = 0  # streaks only count evidence after the last action on the loop
    obs: deque[Observation] = field(default_factory=lambda: deque(maxlen=200))

    # ----------------------------------------------------------------- folding

    def observe(self, event: Event, seq: int, received: datetime | None = None) -> None:
        """Fold `event` in. `received`: when the observer got it, by its own clock (so a
        worker's clock skew does not make it look stale); None in a replay."""
        if isinstance(event, _WORKER_EVENTS):
            seen = received or event.ts
            if self.last_seen is None or seen > self.last_seen:
                self.last_seen = seen
            if self.last_ts is None or event.ts > self.last_ts:
                self.last_ts = event.ts
                if self.stopped is not None and event.ts > self.stopped.ts:
                    self.stopped = None  # it is alive again
                    self.restart_asked = None
        if isinstance(event, LoopHeartbeat):
            if self.heartbeat is None or event.ts >= self.heartbeat.ts:
                self.heartbeat = event
                self.heartbeat_seen = received  # None in a replay: not by our clock
                self.host, self.pid = event.host, event.pid
                started = event.agent_started_at
                if started is None:
                    self.agent_run = None
                elif self.agent_run is None or self.agent_run[0] != started:
                    self.agent_run = (started, event.id)
                if event.task_id:
                    self._switch_task(event.task_id)
        elif isinstance(event, LoopStarted):
            self.host, self.pid = event.host, event.pid
            self.barrier = seq
            self.restart_asked = None
        elif isinstance(event, LoopStop):
            self.restart_asked = event.ts if event.restart else None
        elif isinstance(event, LoopStopped):
            if self.last_ts is None or event.ts >= self.last_ts:
                self.stopped = event
        elif isinstance(event, TaskStarted):
            self._switch_task(event.task_id)
        elif isinstance(event, IterationFinished):
            self._switch_task(event.task_id)
            self.last_iteration = event
            self.obs.append(_iteration_obs(event, seq))
        elif isinstance(event, TaskFailed):
            text = f"task_failed: {event.reason}"
            self.obs.append(
                Observation(
                    seq,
                    event.id,
                    event.task_id,
                    iteration=False,
                    counted=True,
                    failure=text,
                    signature=("task_failed", normalise(event.reason)),
                )
            )
        elif isinstance(event, MonitorAction | TaskReset):
            self.barrier = seq

    def _switch_task(self, task_id: str) -> None:
        self.task_id = task_id

    # ----------------------------------------------------------------- state

    def silence(self, now: datetime, watched_since: datetime | None = None) -> float:
        """Heartbeat intervals since the worker was last heard from (0 if unknown)."""
        hb = self.heartbeat
        if hb is None or self.last_seen is None:
            return 0.0
        if self.stopped is not None and self.stopped.status != LoopStatus.ERROR:
            return 0.0
        seen = max(self.last_seen, watched_since) if watched_since else self.last_seen
        return silent_intervals(seen, hb.interval_s, now)

    def agent_silence(self, now: datetime) -> float | None:
        """Seconds since the running agent's last sign of life; None when no agent runs.
        The worker's own gap (heartbeat time - last sign) plus the time since that
        heartbeat arrived, by the observer's clock: a skewed worker clock cancels out."""
        hb = self.heartbeat
        if hb is None or hb.agent_started_at is None:
            return None
        last = hb.agent_started_at
        if hb.agent_activity_at is not None and hb.agent_activity_at > last:
            last = hb.agent_activity_at
        gap = max(0.0, (hb.ts - last).total_seconds())
        seen = self.heartbeat_seen
        since = 0.0 if seen is None else max(0.0, (now - seen).total_seconds())
        return gap + since

    def waiting(self, now: datetime) -> bool:
        """Waiting out a usage limit (or on a person): not stuck."""
        hb = self.heartbeat
        if (
            hb is not None
            and hb.status == LoopStatus.WAITING
            and (hb.waiting_until is None or hb.waiting_until > now)
        ):
            return True
        it = self.last_iteration
        return (
            it is not None
            and it.failure == FailureKind.USAGE_LIMIT
            and it.retry_at is not None
            and it.retry_at > now
        )

    def _recent(self, *, task: bool = True) -> list[Observation]:
        return [
            o for o in self.obs if o.seq > self.barrier and (not task or o.task_id == self.task_id)
        ]

    # ----------------------------------------------------------------- rules

    def findings(
        self,
        now: datetime,
        t: Thresholds,
        pid_alive: PidAlive,
        watched_since: datetime | None = None,
    ) -> list[Finding]:
        """Every rule that holds now, most specific first. `watched_since`: when the
        observer started; silence before that is not held against the loop."""
        if self.stopped is not None and self.stopped.status != LoopStatus.ERROR:
            return self._not_restarted(now, t)  # finished or stopped on purpose
        death = self._death(now, t, pid_alive, watched_since)
        if death is not None:
            return [death]
        if self.heartbeat is not None and self.heartbeat.status in (
            LoopStatus.STOPPED,
            LoopStatus.PAUSED,
            LoopStatus.IDLE,
        ):
            return []
        if self.task_id is None or self.waiting(now):
            return []
        found = [
            f
            for f in (
                self._silent_agent(now, t),
                self._repeated_failure(t),
                self._permission_denials(t),
                self._no_changes(t),
                self._reply_collapse(t),
            )
            if f is not None
        ]
        if not any(f.rule == Rule.REPEATED_FAILURE for f in found):
            varied = self._varied_failures(t)
            if varied is not None:
                found.append(varied)
        return found

    def _finding(self, rule: Rule, started_by: str, reason: str, **kw: object) -> Finding:
        return Finding(self.loop, rule, self.task_id, started_by, reason, **kw)  # type: ignore[arg-type]

    def _not_restarted(self, now: datetime, t: Thresholds) -> list[Finding]:
        """Stopped for a restart, and not started again in time."""
        stopped = self.stopped
        if stopped is None or self.restart_asked is None:
            return []
        waited = (now - max(stopped.ts, self.restart_asked)).total_seconds()
        if waited <= t.restart_grace_s:
            return []
        return [
            Finding(
                self.loop,
                Rule.WORKER_DEAD,
                self.task_id,
                stopped.id,
                f"stopped for a restart {waited:.0f}s ago and not started again",
            )
        ]

    def _death(
        self, now: datetime, t: Thresholds, pid_alive: PidAlive, watched_since: datetime | None
    ) -> Finding | None:
        if self.stopped is not None:  # status ERROR: the worker crashed
            return Finding(
                self.loop,
                Rule.WORKER_DEAD,
                self.task_id,
                self.stopped.id,
                f"the worker stopped with an error: {_clip(self.stopped.reason, 200)}",
            )
        hb = self.heartbeat
        if hb is None:
            return None
        if (
            self.host is not None
            and self.pid is not None
            and pid_alive(self.host, self.pid) is False
        ):
            return Finding(
                self.loop,
                Rule.WORKER_DEAD,
                self.task_id,
                hb.id,
                f"worker process {self.pid} on {self.host} is gone",
            )
        seen = self.last_seen or hb.ts
        if watched_since is not None and watched_since > seen:
            seen = watched_since
        if is_stale(seen, hb.interval_s, now, t.stale_intervals):
            age = (now - seen).total_seconds()
            return Finding(
                self.loop,
                Rule.STALE_HEARTBEAT,
                self.task_id,
                hb.id,
                f"no heartbeat for {age:.1f}s (interval {hb.interval_s:g}s)",
            )
        return None

    def _silent_agent(self, now: datetime, t: Thresholds) -> Finding | None:
        """An agent runs and has given no sign of life for `silent_agent_after_s`."""
        hb = self.heartbeat
        silence = self.agent_silence(now)
        if hb is None or silence is None or hb.status != LoopStatus.RUNNING:
            return None
        if silence <= t.silent_agent_after_s or self.agent_run is None:
            return None
        started, first_hb = self.agent_run
        task = hb.task_id or self.task_id
        seen = (
            "it has printed nothing, called no tool and changed no file since it started"
            if hb.agent_activity_at is None or hb.agent_activity_at <= started
            else f"its last sign of life was {(hb.agent_activity or 'activity').replace('_', ' ')}"
        )
        hint = (
            f"Your previous run on {task} gave no sign of life for {silence:.0f}s ({seen}) and "
            "was stopped. Work in small steps that show progress. Do not run commands that "
            "wait for input or never end (servers, watchers, `sleep`, interactive prompts): "
            "give long commands a timeout and start servers in the background."
        )
        return Finding(
            self.loop,
            Rule.SILENT_AGENT,
            task,
            f"agent-run:{hb.iteration}:{started.isoformat()}",
            f"the agent of iteration {hb.iteration} has been silent for {silence:.0f}s "
            f"(limit {t.silent_agent_after_s:g}s)",
            hint=hint,
            caused_by=first_hb,
            iteration=hb.iteration,
            agent_started_at=started,
        )

    def _counted_iterations(self) -> list[Observation]:
        return [o for o in self._recent() if o.iteration and o.counted]

    def _trailing(
        self, items: list[Observation], pred: Callable[[Observation], bool]
    ) -> list[Observation]:
        run: list[Observation] = []
        for o in reversed(items):
            if not pred(o):
                break
            run.append(o)
        return run[::-1]

    def _no_changes(self, t: Thresholds) -> Finding | None:
        run = self._trailing(self._counted_iterations(), lambda o: not o.changed)
        if len(run) < t.no_change_iterations:
            return None
        hint = (
            f"The last {len(run)} iterations on {self.task_id} changed no file. Do not re-read "
            "and re-plan: make one concrete change toward the first unmet acceptance criterion "
            "and commit it. If the task cannot be done as written, reply BLOCKED with the reason."
        ) + _commands_of(run, "Commands run meanwhile, without effect", 300)
        return self._finding(
            Rule.NO_CHANGES,
            run[0].event_id,
            f"{len(run)} iterations in a row changed no file",
            hint=hint,
        )

    def _failures(self) -> list[Observation]:
        return [o for o in self._recent() if o.signature is not None]

    def _repeated_failure(self, t: Thresholds) -> Finding | None:
        failures = self._failures()
        if len(failures) < t.repeated_failure_count:
            return None
        last = failures[-1].signature
        assert last is not None
        run = self._trailing(
            failures,
            lambda o: o.signature is not None and similar(o.signature, last, t.failure_similarity),
        )
        if len(run) < t.repeated_failure_count:
            return None
        text = _clip(failures[-1].failure or "", 300)
        hint = (
            f"The same failure happened {len(run)} times in a row: {text} "
            "Do not repeat the approach that produced it; find its cause first, then take a "
            "different approach."
        )
        return self._finding(
            Rule.REPEATED_FAILURE,
            run[0].event_id,
            f"the same failure {len(run)} times in a row: {_clip(text, 120)}",
            hint=hint,
            evidence=tuple(o.failure or "" for o in run),
        )

    def _varied_failures(self, t: Thresholds) -> Finding | None:
        failures = self._failures()
        if len(failures) < t.varied_failure_count:
            return None
        kinds: list[tuple[str, str]] = []
        for o in failures:
            assert o.signature is not None
            if not any(similar(o.signature, k, t.failure_similarity) for k in kinds):
                kinds.append(o.signature)
        if len(kinds) < 2:
            return None
        return self._finding(
            Rule.VARIED_FAILURES,
            failures[0].event_id,
            f"{len(failures)} failures on {self.task_id} for {len(kinds)} different reasons",
            evidence=tuple(_clip(o.failure or "", 400) for o in failures[-8:]),
        )

    def _permission_denials(self, t: Thresholds) -> Finding | None:
        run = self._trailing(self._counted_iterations(), lambda o: o.denials > 0)
        if len(run) < t.permission_denial_iterations:
            return None
        total = sum(o.denials for o in run)
        hint = (
            f"{total} tool calls were denied permission over the last {len(run)} iterations. "
            "Use only the tools and commands this loop allows; if the task needs more, reply "
            "BLOCKED and name the permission it needs."
        ) + _commands_of(run, "Recent commands", 200)
        return self._finding(
            Rule.PERMISSION_DENIALS,
            run[0].event_id,
            f"permission denials in {len(run)} iterations in a row ({total} in all)",
            hint=hint,
        )

    def _reply_collapse(self, t: Thresholds) -> Finding | None:
        replies = [o for o in self.obs if o.iteration and o.counted]
        if len(replies) < t.reply_collapse_min_samples + t.reply_collapse_consecutive:
            return None
        run = replies[-t.reply_collapse_consecutive :]
        if run[0].seq <= self.barrier:
            return None  # the run must be new since the last action on the loop
        baseline = replies[: -t.reply_collapse_consecutive][-t.reply_median_window :]
        if len(baseline) < t.reply_collapse_min_samples:
            return None
        median = statistics.median(o.reply_chars for o in baseline)
        if median <= 0 or any(o.reply_chars >= t.reply_collapse_ratio * median for o in run):
            return None
        sizes = ", ".join(str(o.reply_chars) for o in run)
        return self._finding(
            Rule.REPLY_COLLAPSE,
            run[0].event_id,
            f"replies collapsed to {sizes} chars (running median {median:.0f})",
        )


def _iteration_obs(event: IterationFinished, seq: int) -> Observation:
    counted = event.counted and event.failure not in (FailureKind.USAGE_LIMIT, FailureKind.OUTAGE)
    failure = signature = None
    if event.failure is not None and counted:
        text = event.failure_detail or event.reply_tail or ""
        failure = f"{event.failure.value}: {text}"
        signature = (event.failure.value, normalise(text))
    return Observation(
        seq,
        event.id,
        event.task_id,
        iteration=True,
        counted=counted and event.outcome != IterationOutcome.BLOCKED,
        changed=bool(event.changed_files) or event.diff_stat.files > 0,
        failure=failure,
        signature=signature,
        reply_chars=event.reply_chars,
        denials=event.permission_denials,
        commands=tuple(event.commands),
    )
