"""Merge-queue benchmark: verified merges per minute against a plain git script.

    python bench/merge_queue.py                    # 4 loops x 5 tasks, 3 rounds
    python bench/merge_queue.py --loops 2 --tasks 3 --rounds 1   # a smoke run

Each loop pushes its tasks' commits (one new file per task) to its branch `loop/<name>`
on a bare origin; the timed part starts when every claim is on the bus and ends when
the last `merge.completed` is published. The check of every task is a fixed cheap
command (`true`), and so is the repository's test command, so the figure is the
machinery's own cost: the gate (fetch, main's criteria, tamper diff, a clean worktree
of the claim, the check) and the merge queue (fetch, a scratch worktree, the merge,
the checks on the merged tree, a non-force push). Bus: fakeredis in this process.

The ceiling does the same merges with a plain script of git commands in one clone:
fetch, squash-merge onto main in a reused worktree, run the check, push. Systems and
ceiling take turns, round by round, so load from elsewhere on the machine hits both;
the figures are the medians of the rounds.

Prints a table, then as its last line one JSON object:
{"merges_per_min": ..., "ceiling_per_min": ..., "ratio": ...}
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fakeredis

from bus import BusSettings, RedisBus
from events import Criterion, Role, ScriptCheck, Source, TaskClaimed
from gates import GateSettings, MergeQueue, MergeSettings, VerificationGate
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


def run_system(origin: Path, work: list[Work], root: Path) -> float:
    """Seconds from all claims published to the last merge.completed."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)), protocol=2)
    bus = RedisBus(client, settings=BusSettings(prefix=f"bench-{uuid.uuid4().hex[:8]}"))
    gate = VerificationGate(bus, GateSettings(repo=clone(origin, root / "gate")), loader=loader)
    queue = MergeQueue(bus, MergeSettings(repo=clone(origin, root / "merge"), test_command=CHECK))
    subs = [gate.subscribe("gate-1"), queue.subscribe("merge-1")]
    source = Source(role=Role.WORKER, instance="bench")
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
    while sum(sub.drain() for sub in subs):
        pass
    elapsed = time.perf_counter() - start
    done = [e for _, e in bus.replay(types=["merge.completed"])]
    client.close()
    remove_scratch(gate.settings.repo)
    remove_scratch(queue.settings.repo)
    if len(done) != len(work):
        raise SystemExit(f"system merged {len(done)} of {len(work)} tasks")
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
    args = parser.parse_args()
    n = args.loops * args.tasks
    system_rates, ceiling_rates = [], []
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        (Path(tmp) / "template").mkdir()
        template, work = make_origin(Path(tmp) / "template", args.loops, args.tasks)
        for r in range(args.rounds):
            for kind, rates, run in (
                ("system", system_rates, run_system),
                ("ceiling", ceiling_rates, run_ceiling),
            ):
                root = Path(tmp) / f"{kind}-{r}"
                root.mkdir()
                origin = root / "origin.git"
                shutil.copytree(template, origin)
                seconds = run(origin, work, root)
                rates.append(n / seconds * 60)
                print(f"round {r + 1} {kind:8} {n} merges in {seconds:6.2f} s", file=sys.stderr)
    merges, ceiling = statistics.median(system_rates), statistics.median(ceiling_rates)
    print(f"\nmerge queue: {args.loops} loops x {args.tasks} tasks, check `{CHECK}`")
    print(f"{'':28}{'merges/min':>12}")
    print(f"{'gate + merge queue':28}{merges:12.1f}")
    print(f"{'plain git script (ceiling)':28}{ceiling:12.1f}")
    print(f"{'ratio':28}{merges / ceiling:12.2f}")
    figures = {
        "merges_per_min": round(merges, 1),
        "ceiling_per_min": round(ceiling, 1),
        "ratio": round(merges / ceiling, 3),
        "loops": args.loops,
        "tasks_per_loop": args.tasks,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
