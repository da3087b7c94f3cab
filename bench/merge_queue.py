"""Merge-queue benchmark: verified merges per minute against a plain git script.

    python bench/merge_queue.py                    # 4 loops x 5 tasks, 3 rounds
    python bench/merge_queue.py --loops 2 --tasks 3 --rounds 1   # a smoke run

Each loop pushes its tasks' commits (one new file per task) to its branch `loop/<name>`
on a bare origin; the timed part starts when every claim is on the bus and ends when
the last `merge.completed` is published. The check of every task is a fixed cheap
command (`true`), and so is the repository's test command, so the figure is the
machinery's own cost: the gate (fetch, main's criteria, tamper diff, a clean worktree
of the claim, the check) and the merge queue (fetch, a scratch worktree, the squash
merge, the checks on the merged tree, a non-force push). The gate and the queue poll
on threads of their own, as their processes would; the bus is fakeredis in this
process. It runs twice: the one-slot `MergeQueue`, and `BatchMergeQueue` (--batch).

The ceiling does the same merges with a plain script of git commands in one clone:
fetch, squash-merge onto main in a reused worktree, run the check and the test
command, push; no verification of the claim. The runs take turns, round by round, so
load from elsewhere on the machine hits all alike; the figures are medians of rounds.

Prints a table, then as its last line one JSON object:
{"merges_per_min": ..., "ceiling_per_min": ..., "ratio": ..., "batch_merges_per_min": ...,
 "batch_ratio": ..., "loops": ..., "tasks_per_loop": ...}
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis

from bus import BusSettings, RedisBus, Subscription
from events import Criterion, Role, ScriptCheck, Source, TaskClaimed
from gates import (
    BatchMergeQueue,
    GateSettings,
    MergeQueue,
    MergeSettings,
    VerificationGate,
)
from gates.gitutil import git, remove_scratch

CHECK = "true"


@dataclass(frozen=True)
class Work:
    loop: str
    task_id: str
    commit: str


def sh(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, timeout=120, capture_output=True)


def make_origin(root: Path, loops: int, tasks: int) -> tuple[Path, list[Work]]:
    """A bare origin with a seed on main and `tasks` commits on each `loop/<name>`."""
    origin = root / "origin.git"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
    seed = root / "seed"
    sh("git", "init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("# bench\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "remote", "add", "origin", str(origin))
    git(seed, "push", "-q", "origin", "main")
    work: list[Work] = []
    for i in range(loops):
        name = f"l{i}"
        git(seed, "checkout", "-q", "-B", f"loop/{name}", "main")
        for j in range(tasks):
            path = seed / name / f"t{j}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"{name} task {j}\n")
            git(seed, "add", "-A")
            git(seed, "commit", "-q", "-m", f"{name} t{j}")
            work.append(Work(name, f"t{j}", git(seed, "rev-parse", "HEAD")))
        git(seed, "push", "-q", "origin", f"loop/{name}")
    # Claims arrive interleaved across loops, as they would from parallel loops.
    work.sort(key=lambda w: (int(w.task_id[1:]), w.loop))
    return origin, work


def clone(origin: Path, path: Path) -> Path:
    sh("git", "clone", "-q", str(origin), str(path))
    return path


def loader(root: Path, loop: str, task_id: str) -> list[Criterion]:
    return [Criterion(criterion="the cheap check passes", check=ScriptCheck(run=CHECK))]


def run_system(origin: Path, work: list[Work], root: Path, batch_size: int = 1) -> float:
    """Seconds from all claims published to the last merge.completed. The gate and the
    merge queue poll on threads of their own, as their processes would in deployment."""
    server = fakeredis.FakeServer(version=(7, 0))
    settings = BusSettings(prefix=f"bench-{uuid.uuid4().hex[:8]}")
    clients = [fakeredis.FakeRedis(server=server, protocol=2) for _ in range(3)]
    bus, gate_bus, merge_bus = (RedisBus(c, settings=settings) for c in clients)
    gate = VerificationGate(
        gate_bus, GateSettings(repo=clone(origin, root / "gate")), loader=loader
    )
    merge_settings = MergeSettings(
        repo=clone(origin, root / "merge"), test_command=CHECK, batch_size=batch_size
    )
    queue_cls = BatchMergeQueue if batch_size > 1 else MergeQueue
    queue = queue_cls(merge_bus, merge_settings, loader=loader)
    gate_sub, merge_sub = gate.subscribe("gate-1"), queue.subscribe("merge-1")
    source = Source(role=Role.WORKER, instance="bench")
    done = threading.Event()
    errors: list[BaseException] = []

    def count(bus: RedisBus, etype: str) -> int:
        return sum(1 for _ in bus.replay(types=[etype]))

    def role(sub: Subscription, bus: RedisBus, etype: str) -> None:
        try:
            while not done.is_set():
                if sub.poll(block_ms=20) == 0 and count(bus, etype) >= len(work):
                    return
        except BaseException as exc:
            errors.append(exc)
            done.set()

    threads = [
        threading.Thread(target=role, args=(gate_sub, gate_bus, "verification.passed")),
        threading.Thread(target=role, args=(merge_sub, merge_bus, "merge.completed")),
    ]
    start = time.perf_counter()
    for attempt, w in enumerate(work, 1):
        bus.publish(
            TaskClaimed(
                source=source,
                loop=w.loop,
                task_id=w.task_id,
                attempt=attempt,
                commit=w.commit,
                branch=f"loop/{w.loop}",
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    elapsed = time.perf_counter() - start
    done.set()
    merged = count(bus, "merge.completed")
    for client in clients:
        client.close()
    remove_scratch(gate.settings.repo)
    remove_scratch(queue.settings.repo)
    if errors:
        raise errors[0]
    if merged != len(work):
        raise SystemExit(f"system merged {merged} of {len(work)} tasks")
    return elapsed


def run_ceiling(origin: Path, work: list[Work], root: Path) -> float:
    """The same merges by a plain script of git commands, one reused worktree."""
    repo = clone(origin, root / "plain")
    wt = root / "plain-wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "origin/main")
    start = time.perf_counter()
    for w in work:
        git(repo, "fetch", "-q", "origin")
        git(wt, "checkout", "-q", "--detach", "--force", "origin/main")
        git(wt, "merge", "--squash", "-q", w.commit)
        git(wt, "commit", "-q", "-m", f"{w.loop}/{w.task_id}")
        sh("bash", "-c", CHECK, cwd=wt)  # the task's check
        sh("bash", "-c", CHECK, cwd=wt)  # the repository's test command
        git(wt, "push", "-q", "origin", "HEAD:refs/heads/main")
    elapsed = time.perf_counter() - start
    merged = git(origin, "rev-list", "--count", "main")
    if int(merged) != len(work) + 1:
        raise SystemExit(f"ceiling merged {int(merged) - 1} of {len(work)} tasks")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=5, help="tasks per loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="batch size of the batch run")
    args = parser.parse_args()
    n = args.loops * args.tasks
    runs: dict[str, Callable[[Path, list[Work], Path], float]] = {
        "queue": run_system,
        "batch": lambda o, w, r: run_system(o, w, r, batch_size=args.batch),
        "ceiling": run_ceiling,
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        (Path(tmp) / "template").mkdir()
        template, work = make_origin(Path(tmp) / "template", args.loops, args.tasks)
        for r in range(args.rounds):
            for name, run in runs.items():
                root = Path(tmp) / f"{name}-{r}"
                root.mkdir()
                origin = root / "origin.git"
                shutil.copytree(template, origin)
                seconds = run(origin, work, root)
                rates[name].append(n / seconds * 60)
                print(f"round {r + 1} {name:8} {n} merges in {seconds:6.2f} s", file=sys.stderr)
    queue, batch, ceiling = (statistics.median(rates[k]) for k in ("queue", "batch", "ceiling"))
    print(
        f"\nmerge queue: {args.loops} loops x {args.tasks} tasks, check `{CHECK}`, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'':34}{'merges/min':>12}{'ratio':>8}")
    print(f"{'gate + merge queue (one slot)':34}{queue:12.1f}{queue / ceiling:8.2f}")
    print(f"{f'gate + batch merge queue ({args.batch})':34}{batch:12.1f}{batch / ceiling:8.2f}")
    print(f"{'plain git script (ceiling)':34}{ceiling:12.1f}{1:8.2f}")
    figures = {
        "merges_per_min": round(queue, 1),
        "ceiling_per_min": round(ceiling, 1),
        "ratio": round(queue / ceiling, 3),
        "batch_merges_per_min": round(batch, 1),
        "batch_ratio": round(batch / ceiling, 3),
        "loops": args.loops,
        "tasks_per_loop": args.tasks,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
