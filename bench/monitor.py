"""Monitor benchmark: how fast stuck loops are unblocked, and how often healthy ones
are disturbed.

20 scripted loops with a heartbeat interval of 1 s: 5 get stuck in different ways
(the worker freezes, the worker dies, no file changes, the same failure again and
again, the reply collapses) and 15 stay healthy (some slow: 70 s iterations; some
waiting out a usage limit). The clock is SIMULATED: the script advances it in 50 ms
steps, events carry the simulated time, the monitor ticks every `--tick` simulated
seconds. Events go through a RedisBus on in-process fakeredis (encode, XADD, consumer
group, decode) unless `--direct`. A scripted worker obeys the monitor's commands
(restart, reset), so a stuck loop recovers once unblocked.

detect_s is measured from the stall to the first monitor.action on that loop. The
stall is when the worker froze or died, or, for the rules that need evidence over
iterations, when the iteration completing that evidence finished (the 3rd iteration
without a change, the 3rd identical failure, the 2nd collapsed reply).
false_actions counts actions on healthy loops and actions on stuck loops before
their trouble began. An action after the trouble began but before the evidence point
(another rule saw it first) counts as detected in 0 s.

    python bench/monitor.py [--seed N] [--duration S] [--tick S] [--direct]

Last line: {"detect_s_p50": ..., "detect_s_max": ..., "false_actions": ...}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis

from agents.monitor import Monitor
from bus import BusSettings, RedisBus
from events import (
    Event,
    FailureKind,
    IterationFinished,
    IterationOutcome,
    IterationStarted,
    LoopHeartbeat,
    LoopStarted,
    LoopStatus,
    LoopStop,
    MonitorAction,
    Role,
    Source,
    TaskReset,
)
from infra.store import Store

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOST = "bench-host"
INTERVAL = 1.0
STEP = 0.05
SRC = Source(role=Role.WORKER, instance=f"{HOST}:0")
ERRORS = [
    "ImportError: cannot import name 'parse' from 'app.cli'",
    "AssertionError: expected 200, got 404 in test_routes",
    "SyntaxError: invalid syntax (models.py, line 41)",
    "TypeError: unsupported operand type(s) for +: 'int' and 'str'",
    "KeyError: 'user_id' in handlers/session.py",
    "ModuleNotFoundError: No module named 'yaml'",
]


@dataclass
class ScriptedLoop:
    """One loop's worker, as a script of events in simulated time."""

    name: str
    kind: str  # healthy | slow | waiting | stale | dead | no_changes | repeated_failure | reply_collapse
    rng: random.Random
    stall_at: float = 1e9  # when the trouble starts (stuck kinds)
    pid: int = 0
    phase: float = 0.0
    next_hb: float = 0.0
    next_it: float = 0.0
    iteration: int = 0
    task: int = 1
    period: float = 4.0
    frozen: bool = False
    dead: bool = False
    recovered: bool = False
    bad_iterations: int = 0
    evident_at: float | None = None  # the stall, as this bench defines it
    acted_at: float | None = None
    action_rule: str | None = None
    errors_used: int = 0
    since_change: int = 0
    since_denial: int = 3
    notes: list[str] = field(default_factory=list)

    @property
    def stuck(self) -> bool:
        return self.kind in ("stale", "dead", "no_changes", "repeated_failure", "reply_collapse")

    def start(self, t: float) -> list[Event]:
        self.next_hb = t + self.phase
        self.next_it = t + self.phase + self.period
        if self.kind == "slow":
            self.next_it = t + 70.0
        return [
            LoopStarted(
                source=SRC,
                loop=self.name,
                ts=at(t),
                agent="script",
                pid=self.pid,
                host=HOST,
                tasks_total=10,
            )
        ]

    def troubled(self, t: float) -> bool:
        return self.stuck and not self.recovered and t >= self.stall_at

    def events(self, t: float) -> list[Event]:
        out: list[Event] = []
        if self.troubled(t) and self.kind in ("stale", "dead"):
            if not (self.frozen or self.dead):
                self.frozen, self.dead = self.kind == "stale", self.kind == "dead"
                self.evident_at = self.stall_at
            return []
        if t >= self.next_hb:
            self.next_hb += INTERVAL
            out.append(self.heartbeat(t))
        if t >= self.next_it:
            out += self.finish_iteration(t)
        return out

    def heartbeat(self, t: float) -> LoopHeartbeat:
        waiting = self.kind == "waiting"
        return LoopHeartbeat(
            source=SRC,
            loop=self.name,
            ts=at(t),
            status=LoopStatus.WAITING if waiting else LoopStatus.RUNNING,
            pid=self.pid,
            host=HOST,
            interval_s=INTERVAL,
            task_id=f"T{self.task}",
            iteration=self.iteration,
            waiting_until=at(3600) if waiting else None,
        )

    def finish_iteration(self, t: float) -> list[Event]:
        self.iteration += 1
        task = f"T{self.task}"
        fields: dict[str, object] = {
            "task_id": task,
            "iteration": self.iteration,
            "attempt": 1,
            "outcome": IterationOutcome.CONTINUE,
            "duration_s": self.period,
            "reply_chars": max(800, int(self.rng.gauss(2500, 500))),
            "changed_files": [f"src/{self.name}/m{self.rng.randint(1, 9)}.py"],
        }
        if self.kind == "waiting":
            fields.update(
                outcome=IterationOutcome.FAILED,
                failure=FailureKind.USAGE_LIMIT,
                failure_detail="usage limit reached",
                changed_files=[],
                reply_chars=0,
                retry_at=at(3600),
                counted=False,
            )
            self.next_it = t + 5.0
            return [IterationFinished(source=SRC, loop=self.name, ts=at(t), **fields)]  # type: ignore[arg-type]
        if self.kind == "slow":
            fields["duration_s"] = 70.0
            self.next_it = t + 70.0
            return [
                IterationFinished(source=SRC, loop=self.name, ts=at(t), **fields),  # type: ignore[arg-type]
                IterationStarted(
                    source=SRC,
                    loop=self.name,
                    ts=at(t),
                    task_id=task,
                    iteration=self.iteration + 1,
                    attempt=1,
                    agent="script",
                    prompt_bytes=4000,
                ),
            ]
        self.next_it = t + self.period
        if self.troubled(t):
            self.bad_iterations += 1
            self.next_it = t + 2.0
            if self.kind == "no_changes":
                fields["changed_files"] = []
                need = 3
            elif self.kind == "repeated_failure":
                fields.update(
                    outcome=IterationOutcome.FAILED,
                    failure=FailureKind.AGENT_ERROR,
                    failure_detail=f"{ERRORS[0]} (attempt {self.iteration})",
                    changed_files=[],
                )
                need = 3
            else:  # reply_collapse
                fields["reply_chars"] = self.rng.randint(10, 60)
                need = 2
            if self.bad_iterations == need:
                self.evident_at = t
        else:
            # Healthy noise: now and then no change, a failure (never the same twice
            # running), a single permission denial.
            if self.since_change < 1 and self.rng.random() < 0.15:
                fields["changed_files"] = []
                self.since_change += 1
            else:
                self.since_change = 0
            if self.rng.random() < 0.1:
                fields.update(
                    outcome=IterationOutcome.FAILED,
                    failure=FailureKind.AGENT_ERROR,
                    failure_detail=ERRORS[1 + self.errors_used % (len(ERRORS) - 1)],
                )
                self.errors_used += 1
            if self.since_denial >= 3 and self.rng.random() < 0.1:
                fields["permission_denials"] = 1
                self.since_denial = 0
            else:
                self.since_denial += 1
            if self.iteration % 6 == 0:
                self.task += 1
        return [IterationFinished(source=SRC, loop=self.name, ts=at(t), **fields)]  # type: ignore[arg-type]

    def obey(self, command: Event, t: float) -> list[Event]:
        """The scripted worker's side: a restart or a reset ends the trouble."""
        if isinstance(command, LoopStop) and command.restart:
            self.recovered, self.frozen, self.dead = True, False, False
            self.pid += 100_000
            self.next_hb = t + 0.5
            self.next_it = t + self.period
            return self.start(t)[:1]
        if isinstance(command, TaskReset):
            self.recovered = True
            self.bad_iterations = 0
        return []


def at(t: float) -> datetime:
    return T0 + timedelta(seconds=t)


def build(rng: random.Random) -> list[ScriptedLoop]:
    kinds = (
        ["stale", "dead", "no_changes", "repeated_failure", "reply_collapse"]
        + ["healthy"] * 9
        + ["slow"] * 3
        + ["waiting"] * 3
    )
    loops = []
    for i, kind in enumerate(kinds):
        loop = ScriptedLoop(f"loop-{i:02d}-{kind}", kind, random.Random(rng.random()))
        loop.pid = 1000 + i
        loop.phase = rng.uniform(0, INTERVAL)
        loop.period = rng.uniform(3.0, 6.0)
        if loop.stuck:
            loop.stall_at = rng.uniform(25.0, 45.0)
        loops.append(loop)
    return loops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=120.0, help="simulated seconds")
    parser.add_argument("--tick", type=float, default=0.1, help="monitor tick, simulated seconds")
    parser.add_argument("--direct", action="store_true", help="call the monitor directly, no bus")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = random.Random(args.seed)
    loops = build(rng)
    by_name = {loop.name: loop for loop in loops}
    now = [T0]
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)), protocol=2)
    store = Store(client, "bench", "monitor")

    def pid_alive(host: str, pid: int) -> bool | None:
        if host != HOST:
            return None
        return not any(loop.dead and loop.pid == pid for loop in loops)

    monitor = Monitor(store, clock=lambda: now[0], pid_alive=pid_alive)
    actions: list[tuple[float, MonitorAction]] = []
    commands: list[Event] = []
    bus = None if args.direct else RedisBus(client, settings=BusSettings(prefix="bench"))
    published = 0

    def emitted(out: list[Event], t: float) -> None:
        for e in out:
            if isinstance(e, MonitorAction):
                actions.append((t, e))
            elif isinstance(e, LoopStop | TaskReset):
                commands.append(e)
        if bus is not None and out:
            bus.publish_many(out)

    t = 0.0
    sub = None
    if bus is not None:
        sub = bus.subscribe(
            "monitor", "bench", lambda e: emitted(monitor.handle(e), t), types=monitor.types
        )
    batch: list[Event] = []
    for loop in loops:
        batch += loop.start(0.0)
    next_tick = 0.0
    steps = int(args.duration / STEP)
    for step in range(steps + 1):
        t = round(step * STEP, 6)
        now[0] = at(t)
        for loop in loops:
            batch += loop.events(t)
        if bus is not None and sub is not None:
            if batch:
                bus.publish_many(batch)
                published += len(batch)
            sub.drain()
        else:
            for e in batch:
                emitted(monitor.handle(e), t)
        batch = []
        if t >= next_tick:
            next_tick += args.tick
            emitted(monitor.tick(now[0]), t)
        for command in commands:
            loop = by_name[command.loop or ""]
            batch += loop.obey(command, t)
        commands.clear()
        for when, act in actions:
            loop = by_name[act.loop or ""] if act.loop else None
            if loop is not None and loop.acted_at is None:
                loop.acted_at, loop.action_rule = when, act.rule

    false_actions = 0
    detect: list[float] = []
    print(
        f"monitor benchmark: SIMULATED clock, {len(loops)} loops, heartbeat {INTERVAL:g} s, "
        f"tick {args.tick:g} s, {args.duration:g} s simulated, "
        f"{'direct calls' if bus is None else f'RedisBus on fakeredis ({published} events)'}, "
        f"seed {args.seed}, {time.perf_counter() - started:.1f} s wall"
    )
    print(f"{'loop':28} {'stall at':>9} {'acted at':>9} {'detect s':>9}  rule")
    for loop in loops:
        acts = [(w, a) for w, a in actions if a.loop == loop.name]
        if not loop.stuck:
            false_actions += len(acts)
            if acts:
                print(f"{loop.name:28} {'-':>9} {acts[0][0]:>9.2f} {'FALSE':>9}  {acts[0][1].rule}")
            continue
        early = [(w, a) for w, a in acts if w < loop.stall_at]
        false_actions += len(early)
        for w, a in early:
            print(f"{loop.name:28} {'-':>9} {w:>9.2f} {'FALSE':>9}  {a.rule}: {a.reason}")
        if loop.acted_at is None or loop.acted_at < loop.stall_at:
            print(f"{loop.name:28} {'?':>9} {'-':>9} {'MISSED':>9}")
            detect.append(float("inf"))
            continue
        # Acting before the bench's own evidence point (another rule saw it first,
        # e.g. failing iterations that also change nothing) counts as 0.
        evident = loop.evident_at if loop.evident_at is not None else loop.acted_at
        d = max(0.0, loop.acted_at - evident)
        detect.append(d)
        print(f"{loop.name:28} {evident:>9.2f} {loop.acted_at:>9.2f} {d:>9.2f}  {loop.action_rule}")
    healthy = [loop for loop in loops if not loop.stuck]
    print(
        f"healthy loops: {len(healthy)} (slow: {sum(lp.kind == 'slow' for lp in healthy)}, "
        f"waiting on a usage limit: {sum(lp.kind == 'waiting' for lp in healthy)}); "
        f"false actions: {false_actions}"
    )
    figures = {
        "detect_s_p50": round(statistics.median(detect), 3),
        "detect_s_max": round(max(detect), 3),
        "false_actions": false_actions,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
