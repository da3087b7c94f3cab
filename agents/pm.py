"""The PM: cross-loop dependencies, priorities under a concurrency limit, file overlap
between loops' unmerged branches, and progress per loop.

The PM reconciles: from the facts in the stream it computes which tasks should be
held, compares that with the holds it has published (`task.held` / `task.released`,
read back from the stream too), and publishes the difference. So a PM that restarts,
replays the stream and reconciles again publishes nothing twice and misses nothing.
Loop priorities and the concurrency come from configuration, not from `loops/`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from bus.idempotency import Window
from events import (
    Event,
    IterationFinished,
    LoopHeartbeat,
    LoopStarted,
    LoopStopped,
    MergeCompleted,
    ProgressReported,
    Role,
    Source,
    TaskBlocked,
    TaskHeld,
    TaskHint,
    TaskPassed,
    TaskReleased,
    TaskStarted,
    utcnow,
)

Clock = Callable[[], datetime]
SEEN_IDS = 200_000  # dedupe window (the stream keeps about 100k entries)
Key = tuple[str, str]  # (loop, task id)

PM_TYPES = (
    "loop.started",
    "loop.heartbeat",
    "loop.stopped",
    "task.started",
    "task.blocked",
    "task.passed",
    "task.held",
    "task.released",
    "iteration.finished",
    "merge.completed",
)


@dataclass(frozen=True)
class PMConfig:
    """Priorities (higher runs first; default 0), cross-loop dependencies, how many
    loops may run at once (None: all), what to do about file overlap, and how often to
    report progress."""

    priorities: Mapping[str, int] = field(default_factory=dict)
    # "loop/TASK" -> the tasks it depends on; it is held until the other loops' ones
    # ("other/TASK") have merged. The composition root reads them from the specs.
    dependencies: Mapping[str, Collection[str]] = field(default_factory=dict)
    concurrency: int | None = None
    overlap_action: Literal["hold", "rebase"] = "hold"
    overlap_ignore: tuple[str, ...] = ()  # glob patterns of files never counted as overlap
    progress_interval_s: float = 60.0

    def priority(self, loop: str) -> int:
        return self.priorities.get(loop, 0)


@dataclass
class LoopFacts:
    loop: str
    first_seen: datetime | None = None
    running: bool = False  # started and not stopped
    finished: bool = False  # every task passed
    total: int = 0
    passed: set[str] = field(default_factory=set)
    passed_before: int = 0  # passes before the PM first saw the loop
    blocked: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)  # tasks it worked on (known to the PM)
    current: str | None = None
    files: dict[str, set[str]] = field(default_factory=dict)  # task -> unmerged files
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def unmerged_files(self) -> set[str]:
        return set().union(*self.files.values()) if self.files else set()

    @property
    def open_tasks(self) -> set[str]:
        return self.tasks - self.passed


@dataclass(frozen=True)
class Hold:
    reason: str
    until_task: str | None = None


class ProjectManager:
    """Holds and releases tasks across loops; reports progress."""

    role = Role.PM
    types = PM_TYPES
    # Holds and dependencies can be old: the whole stream.
    warm_up_window: str | timedelta | None = "-"

    def __init__(
        self,
        config: PMConfig | None = None,
        *,
        clock: Clock = utcnow,
        source: Source | None = None,
        merged: Iterable[str] = (),
    ) -> None:
        self.config = config or PMConfig()
        self.clock = clock
        self.source = source or Source(role=Role.PM)
        self.loops: dict[str, LoopFacts] = {}
        # "loop/TASK" merged into main: seeded from the durable record (`merged`, the
        # keys of `bus.PassedLedger.all()`), since the stream may be trimmed.
        self.merged: set[str] = set(merged)
        # task -> the other loops' tasks it waits on (from config, and from task.blocked)
        self.deps: dict[Key, set[str]] = {}
        for task, deps in self.config.dependencies.items():
            loop, _, task_id = task.partition("/")
            cross = {d for d in deps if "/" in d and not d.startswith(f"{loop}/")}
            if task_id and cross:
                self.deps[(loop, task_id)] = cross
        self.held: dict[Key, Hold] = {}  # holds this PM has published
        self.hinted: set[str] = set()  # overlap episodes a rebase hint was sent for
        self._seen = Window(SEEN_IDS)
        self.releases_due: dict[Key, str] = {}  # blocked on a task that had merged already
        self._last_report: datetime | None = None

    # ----------------------------------------------------------------- input

    def warm_up(self, events: Iterable[Event], since: datetime | None = None) -> int:
        """Rebuild the facts and the published holds from past events, without acting."""
        return sum(1 for e in events if self._observe(e))

    def handle(self, event: Event) -> list[Event]:
        if not self._observe(event):
            return []
        out = self.reconcile()
        if isinstance(event, TaskPassed) and event.loop:
            out += self.report(event.loop)
        return out

    def tick(self, now: datetime) -> list[Event]:
        out = self.reconcile()
        due = self._last_report is None or (
            (now - self._last_report).total_seconds() >= self.config.progress_interval_s
        )
        if due and self.loops:
            self._last_report = now
            out += self.report()
        return out

    def _facts(self, loop: str, at: datetime) -> LoopFacts:
        facts = self.loops.get(loop)
        if facts is None:
            facts = self.loops[loop] = LoopFacts(loop, first_seen=at)
        return facts

    def _observe(self, event: Event) -> bool:
        """Fold `event` in; False if seen before."""
        if not self._seen.first_time(event.id):
            return False
        if event.loop is None:
            return True
        f = self._facts(event.loop, event.ts)
        if isinstance(event, LoopStarted):
            f.running, f.total = True, max(f.total, event.tasks_total)
            f.passed_before = max(f.passed_before, event.tasks_passed - len(f.passed))
            f.finished = f.total > 0 and event.tasks_passed >= f.total
        elif isinstance(event, LoopHeartbeat):
            f.running = True
            f.total = max(f.total, event.total)
            f.passed_before = max(f.passed_before, event.passed - len(f.passed))
            f.finished = f.total > 0 and event.passed >= f.total
            if event.task_id:
                f.current = event.task_id
                f.tasks.add(event.task_id)
        elif isinstance(event, LoopStopped):
            f.running = False
        elif isinstance(event, TaskStarted):
            f.running, f.current = True, event.task_id
            f.tasks.add(event.task_id)
        elif isinstance(event, IterationFinished):
            f.tasks.add(event.task_id)
            if event.changed_files:
                f.files.setdefault(event.task_id, set()).update(event.changed_files)
            f.tokens += event.tokens.total if event.tokens else 0
            f.cost_usd += event.cost_usd or 0.0
        elif isinstance(event, TaskBlocked):
            f.tasks.add(event.task_id)
            dep = event.blocked_by
            if dep and "/" in dep:
                if dep in self.merged:
                    self.releases_due[(event.loop, event.task_id)] = f"{dep} has merged"
                else:
                    self.deps.setdefault((event.loop, event.task_id), set()).add(dep)
            else:
                f.blocked.add(event.task_id)
        elif isinstance(event, TaskPassed | MergeCompleted):
            self.merged.add(f"{event.loop}/{event.task_id}")
            if isinstance(event, TaskPassed):
                f.passed.add(event.task_id)
                f.blocked.discard(event.task_id)
                self.deps.pop((event.loop, event.task_id), None)
            # The loop's branch merged: its earlier work is on main now.
            f.files.clear()
        elif isinstance(event, TaskHeld):
            self.held[(event.loop, event.task_id)] = Hold(event.reason, event.until_task)
        elif isinstance(event, TaskReleased):
            self.held.pop((event.loop, event.task_id), None)
            self.releases_due.pop((event.loop, event.task_id), None)
        return True

    # ----------------------------------------------------------------- holds

    def desired(self) -> dict[Key, Hold]:
        """The holds the facts call for now (first reason wins)."""
        want: dict[Key, Hold] = {}
        for key, deps in self.deps.items():
            unmet = sorted(deps - self.merged)
            if unmet and key[1] not in self._passed(key[0]):
                want.setdefault(key, Hold(f"waits on {', '.join(unmet)}", unmet[0]))
        if self.config.overlap_action == "hold":
            for key, hold in self._overlap_holds().items():
                want.setdefault(key, hold)
        for key, hold in self._priority_holds().items():
            want.setdefault(key, hold)
        return want

    def _passed(self, loop: str) -> set[str]:
        facts = self.loops.get(loop)
        return facts.passed if facts else set()

    def _rank(self, loop: str) -> tuple[int, str]:
        return (-self.config.priority(loop), loop)

    def _overlaps(self) -> list[tuple[LoopFacts, LoopFacts, set[str]]]:
        """(lower, higher, files) for each pair of live loops touching the same files."""
        live = sorted(
            (f for f in self.loops.values() if f.running and f.files),
            key=lambda f: self._rank(f.loop),
        )
        pairs = []
        for i, high in enumerate(live):
            for low in live[i + 1 :]:
                shared = {
                    p
                    for p in high.unmerged_files & low.unmerged_files
                    if not any(fnmatch.fnmatch(p, g) for g in self.config.overlap_ignore)
                }
                if shared:
                    pairs.append((low, high, shared))
        return pairs

    def _overlap_holds(self) -> dict[Key, Hold]:
        out: dict[Key, Hold] = {}
        for low, high, shared in self._overlaps():
            until = f"{high.loop}/{high.current}" if high.current else None
            names = ", ".join(sorted(shared)[:5]) + (" ..." if len(shared) > 5 else "")
            for task, files in low.files.items():
                if task not in low.passed and files & shared:
                    out.setdefault(
                        (low.loop, task),
                        Hold(
                            f"file overlap with loop {high.loop} ({names}); held until it merges",
                            until,
                        ),
                    )
        return out

    def _priority_holds(self) -> dict[Key, Hold]:
        limit = self.config.concurrency
        wanting = sorted(
            (f for f in self.loops.values() if f.running and not f.finished),
            key=lambda f: self._rank(f.loop),
        )
        if limit is None or len(wanting) <= limit:
            return {}
        out: dict[Key, Hold] = {}
        for f in wanting[limit:]:
            for task in f.open_tasks:
                out[(f.loop, task)] = Hold(
                    f"priority: {len(wanting)} loops want to run, {limit} may; waiting for a slot"
                )
        return out

    def _release(self, key: Key, reason: str) -> TaskReleased:
        self.held.pop(key, None)
        return TaskReleased(source=self.source, loop=key[0], task_id=key[1], reason=reason)

    def reconcile(self) -> list[Event]:
        """Publish the holds and releases that make the published holds match."""
        want = self.desired()
        out: list[Event] = [self._release(k, r) for k, r in sorted(self.releases_due.items())]
        self.releases_due.clear()
        for key in sorted(set(self.held) - set(want)):
            out.append(self._release(key, _why_released(self.held[key])))
        for key in sorted(set(want) - set(self.held)):
            hold = want[key]
            self.held[key] = hold
            out.append(
                TaskHeld(
                    source=self.source,
                    loop=key[0],
                    task_id=key[1],
                    reason=hold.reason,
                    until_task=hold.until_task,
                )
            )
        if self.config.overlap_action == "rebase":
            out += self._rebase_hints()
        for e in out:
            self._seen.mark(e.id)
        return out

    def _rebase_hints(self) -> list[Event]:
        out: list[Event] = []
        for low, high, shared in self._overlaps():
            episode = f"{low.loop}|{high.loop}|{high.current}"
            if episode in self.hinted or low.current is None:
                continue
            self.hinted.add(episode)
            names = ", ".join(sorted(shared)[:5])
            out.append(
                TaskHint(
                    source=self.source,
                    loop=low.loop,
                    task_id=low.current,
                    text=(
                        f"Loop {high.loop} is changing the same files on its unmerged branch "
                        f"({names}). Keep your changes to them small; once {high.loop} merges, "
                        "rebase onto main before you change them again."
                    ),
                )
            )
        return out

    # ----------------------------------------------------------------- progress

    def progress(self, loop: str, now: datetime | None = None) -> ProgressReported:
        """The summary of one loop now."""
        f = self.loops[loop]
        now = now or self.clock()
        passed = f.passed_before + len(f.passed)
        total = max(f.total, passed)
        rate = eta = None
        hours = (now - f.first_seen).total_seconds() / 3600 if f.first_seen else 0.0
        if f.passed and hours > 0:
            rate = len(f.passed) / hours
            eta = (total - passed) / rate * 3600
        return ProgressReported(
            source=self.source,
            loop=loop,
            passed=passed,
            total=total,
            blocked=len(f.blocked - f.passed),
            rate_per_hour=None if rate is None else round(rate, 3),
            eta_s=None if eta is None else round(eta, 1),
            tokens=f.tokens,
            cost_usd=round(f.cost_usd, 6),
        )

    def report(self, loop: str | None = None) -> list[Event]:
        """Progress of one loop, or of every loop (on request, and periodically)."""
        now = self.clock()
        loops = [loop] if loop is not None else sorted(self.loops)
        return [self.progress(name, now) for name in loops if name in self.loops]


def _why_released(hold: Hold) -> str:
    """The release's reason, for the loop's log and its next prompt."""
    if hold.reason.startswith("waits on"):
        return f"released: {hold.until_task or 'the dependency'} has merged"
    if hold.reason.startswith("file overlap"):
        other = hold.until_task.split("/")[0] if hold.until_task else "the other loop"
        return (
            f"released: {other} has merged its changes to the files you share; "
            "rebase onto main before changing them again"
        )
    if hold.reason.startswith("priority"):
        return "released: a slot is free"
    return "released: the reason for the hold no longer applies"
