"""Merge-queue benchmarks.

    python bench/merge_queue.py                 # the realistic scenario (the default)
    python bench/merge_queue.py --arrival-s 1   # ... with a claim every second
    python bench/merge_queue.py --machinery     # the machinery's own cost, vs plain git

**Realistic** (issue 15): 20 verified claims from 5 loops (4 each), each task one new
file whose check takes about 1 s (`sleep 1 && test -f FILE`); every merge also re-runs
the checks of every task merged before (`recheck_merged`, the default), so checks get
heavier as main grows. Among the claims: one culprit (it changes `config.txt`, which an
earlier task of another loop checks), one flaky check (fails on its first run only), one
pair of claims adding the same file. The one-slot `MergeQueue` and the new default
(`BatchMergeQueue`, batches of the default size; `--batch 5,8,10` runs several sizes
against the same one-slot run) each get a fresh copy of the origin, side by side in
one run; claims go straight onto the bus as `verification.passed` (the gate is not
measured). Its last line is JSON: merges per minute for both and their ratio, trees
checked ("check runs") and checks run for both, the runs that isolated the culprit, the
longest wait of any claim and its ratio to the median, `main_red` (landed trees on which
a merged task's check fails: 0).

**Machinery** (`--machinery`): verified merges per minute through the gate and the merge
queue, against a plain script of git commands (the ceiling), with checks that cost
nothing (`true`):

    python bench/merge_queue.py --machinery                    # 4 loops x 5 tasks, 3 rounds
    python bench/merge_queue.py --machinery --loops 2 --tasks 3 --rounds 1   # a smoke run

Each loop pushes its tasks' commits (one new file per task) to its branch `loop/<name>`
on a bare origin; the timed part starts when every claim is on the bus and ends when
the last `merge.completed` is published. The check of every task is a fixed cheap
command (`true`), and so is the repository's test command, so the figure is the
machinery's own cost: the gate (fetch, main's criteria, tamper diff, a clean worktree
of the claim, the check) and the merge queue (fetch, a scratch worktree, the squash
merge, the checks on the merged tree, a non-force push). The gate and the queue poll
on threads of their own, as their processes would; the bus is fakeredis in this
process. It runs twice: the one-slot `MergeQueue`, and `BatchMergeQueue` (--batch).
The ceiling does the same merges with a plain script of git commands in one clone.
The runs take turns, round by round; the figures are medians of rounds. Last line:
{"merges_per_min": ..., "ceiling_per_min": ..., "ratio": ..., "batch_merges_per_min": ...,
 "batch_ratio": ..., "loops": ..., "tasks_per_loop": ...}
"""

from __future__ import annotations

import argparse
import json
import math
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
from events import (
    Criterion,
    MergeConflicted,
    Role,
    ScriptCheck,
    Source,
    TaskClaimed,
    VerificationPassed,
)
from gates import (
    BatchMergeQueue,
    GateSettings,
    MergeQueue,
    MergeSettings,
    VerificationGate,
)
from gates.gitutil import remove_scratch
from infra.git import git

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


def machinery(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machinery", action="store_true")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=5, help="tasks per loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="batch size of the batch run")
    args = parser.parse_args(argv)
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


# ---------------------------------------------------------------------- the realistic scenario

STEP_S = 1.0  # each task's check takes about this long


@dataclass(frozen=True)
class Claim:
    loop: str
    task_id: str
    commit: str
    cond: str  # what its check tests, without the wait (the main_red audit runs this)
    flaky: bool = False


def make_realistic_origin(root: Path, loops: int, tasks: int) -> tuple[Path, list[Claim]]:
    """`loops` x `tasks` claims, each one new file checked by `sleep 1 && test -f FILE`.
    Among them: one culprit that changes `config.txt`, which an earlier task of another
    loop checks (its own check passes; that task's check, run again on every merge,
    fails), one flaky check (fails on its first run only), one pair of claims writing the
    same new file."""
    origin = root / "origin.git"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
    git(origin, "config", "core.logAllRefUpdates", "always")
    seed = root / "seed"
    sh("git", "init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("# bench\n")
    (seed / "config.txt").write_text("mode=ok\n")
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "seed")
    git(seed, "remote", "add", "origin", str(origin))
    git(seed, "push", "-q", "origin", "main")
    # The culprit is its loop's last task: a loop's later claims carry its earlier work.
    # The culprit and the second of the pair are their loops' last tasks: a loop's later
    # claims carry its earlier work, and would fail or conflict with them.
    culprit, flaky = ("l2", f"t{tasks - 1}"), ("l3", "t1")
    pair = {("l1", f"t{tasks - 1}"), (f"l{loops - 1}", f"t{tasks - 1}")}
    claims: list[Claim] = []
    for i in range(loops):
        name = f"l{i}"
        git(seed, "checkout", "-q", "-B", f"loop/{name}", "main")
        for j in range(tasks):
            rel = f"{name}/t{j}.txt"
            (seed / name).mkdir(exist_ok=True)
            (seed / rel).write_text(f"{name} task {j}\n")
            cond = f"test -f {rel}"
            if (name, f"t{j}") == ("l0", "t0"):
                cond += " && grep -q mode=ok config.txt"  # what the culprit breaks
            if (name, f"t{j}") == culprit:
                (seed / "config.txt").write_text("mode=changed\n")
            if (name, f"t{j}") in pair:
                (seed / "shared.txt").write_text(f"written by {name}\n")
            git(seed, "add", "-A")
            git(seed, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", rel)
            commit = git(seed, "rev-parse", "HEAD")
            claims.append(Claim(name, f"t{j}", commit, cond, (name, f"t{j}") == flaky))
        git(seed, "push", "-q", "origin", f"loop/{name}")
    claims.sort(key=lambda c: (int(c.task_id[1:]), c.loop))  # interleaved, as loops finish
    return origin, claims


def check_command(claim: Claim, counter: Path) -> str:
    wait = f"sleep {STEP_S:g}"
    if claim.flaky:  # fails on its first run only
        bump = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}"
        return f"{wait} && {claim.cond} && {{ {bump}; test $n -ne 1; }}"
    return f"{wait} && {claim.cond}"


@dataclass
class Outcome:
    seconds: float
    merged: int
    refused: dict[str, str]  # loop/task -> kind
    waits: list[float]
    stats: dict[str, int]
    main_red: int


def run_realistic(
    origin: Path, claims: list[Claim], root: Path, batch_size: int, arrival_s: float
) -> Outcome:
    """Publish the claims as `verification.passed`, one every `arrival_s` (the gate is not
    what is measured here), while the queue runs on its own thread, polling as its
    process would, until each claim has an outcome."""
    server = fakeredis.FakeServer(version=(7, 0))
    settings = BusSettings(prefix=f"bench-{uuid.uuid4().hex[:8]}")
    clients = [fakeredis.FakeRedis(server=server, protocol=2) for _ in range(2)]
    bus, merge_bus = (RedisBus(c, settings=settings) for c in clients)
    counter = root / "flaky-runs"
    by_task = {(c.loop, c.task_id): c for c in claims}

    def load(main_root: Path, loop: str, task_id: str) -> list[Criterion]:
        claim = by_task.get((loop, task_id))
        if claim is None:
            return []
        run = check_command(claim, counter)
        return [Criterion(criterion=f"{loop}/{task_id} file", check=ScriptCheck(run=run))]

    merge_settings = MergeSettings(
        repo=clone(origin, root / "merge"),
        test_command="test -f README.md",
        batch_size=batch_size,
        check_workers=2,
    )
    queue_cls = BatchMergeQueue if batch_size > 1 else MergeQueue
    queue = queue_cls(merge_bus, merge_settings, loader=load)
    sub = queue.subscribe("merge-1")
    source = Source(role=Role.GATE, instance="bench")
    outcomes = ("merge.completed", "merge.conflicted")
    errors: list[BaseException] = []

    def settled() -> int:
        return sum(1 for _ in merge_bus.replay(types=list(outcomes)))

    def role() -> None:
        try:
            while settled() < len(claims):
                sub.poll(block_ms=20)
        except BaseException as exc:
            errors.append(exc)

    sent: dict[str, float] = {}
    thread = threading.Thread(target=role)
    start = time.perf_counter()
    thread.start()
    for attempt, c in enumerate(claims, 1):
        if attempt > 1:
            time.sleep(arrival_s)  # loops finish their tasks one after another
        sent[f"{c.loop}/{c.task_id}"] = time.time()
        bus.publish(
            VerificationPassed(
                source=source,
                loop=c.loop,
                task_id=c.task_id,
                commit=c.commit,
                attempt=attempt,
                criteria=[],
            )
        )
    thread.join(timeout=1800)
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    merged, refused, waits = 0, {}, []
    for _, e in merge_bus.replay(types=list(outcomes)):
        key = f"{e.loop}/{getattr(e, 'task_id', '')}"
        waits.append(e.ts.timestamp() - sent[key])
        if isinstance(e, MergeConflicted):
            refused[key] = e.kind.value
        else:
            merged += 1
    red = audit(origin, root, claims)
    for client in clients:
        client.close()
    remove_scratch(queue.settings.repo)
    return Outcome(elapsed, merged, refused, waits, dict(queue.stats), red)


def audit(origin: Path, root: Path, claims: list[Claim]) -> int:
    """main_red: the trees main pointed at on which a merged task's check (without its
    wait) fails."""
    conds = {f"{c.loop}/{c.task_id}": c.cond for c in claims}
    tips = git(origin, "reflog", "show", "--format=%H", "refs/heads/main").split()[:-1]
    wt = root / "audit"
    git(origin, "worktree", "add", "-q", "--detach", str(wt), "main")
    red = 0
    for tip in tips:
        git(wt, "checkout", "-q", "--detach", "--force", tip)
        body = git(origin, "log", "--format=%B", tip)
        merged = [
            ln.removeprefix("Loops-Task: ")
            for ln in body.splitlines()
            if ln.startswith("Loops-Task: ")
        ]
        script = " && ".join(conds[t] for t in merged) or "true"
        red += subprocess.run(["bash", "-c", script], cwd=wt, timeout=60).returncode != 0
    return red


def realistic(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the merge queue on a realistic scenario")
    parser.add_argument("--loops", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=4, help="tasks per loop")
    parser.add_argument(
        "--batch",
        default=str(MergeSettings(repo=Path(".")).batch_size),
        help="batch size(s) of the batch queue, comma-separated (each against the same "
        "one-slot run; the JSON's top-level figures are the first's)",
    )
    parser.add_argument(
        "--arrival-s", type=float, default=0.0, help="seconds between claims (0: all waiting)"
    )
    args = parser.parse_args(argv)
    sizes = [int(b) for b in str(args.batch).split(",")]
    results: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        (Path(tmp) / "template").mkdir()
        template, claims = make_realistic_origin(Path(tmp) / "template", args.loops, args.tasks)
        for name, size in (("one_slot", 1), *((f"batch_{b}", b) for b in sizes)):
            root = Path(tmp) / name
            root.mkdir()
            shutil.copytree(template, root / "origin.git")
            results[name] = run_realistic(root / "origin.git", claims, root, size, args.arrival_s)
            o = results[name]
            print(f"{name:9} {o.merged} merged in {o.seconds:6.1f} s", file=sys.stderr)
    one = results["one_slot"]

    def rate(o: Outcome) -> float:
        return o.merged / o.seconds * 60

    def wait_ratio(o: Outcome) -> float:
        return max(o.waits) / statistics.median(o.waits)

    n = len(claims)
    print(
        f"\nmerge queue, realistic: {n} claims from {args.loops} loops, checks of "
        f"~{STEP_S:g} s (every merged task's check re-run), one culprit, one flaky check, "
        f"one conflicting pair; a claim every {args.arrival_s:g} s"
    )
    batches = [results[f"batch_{b}"] for b in sizes]
    print(f"{'':26}{'one slot':>12}" + "".join(f"{f'batch {b}':>12}" for b in sizes))
    rows: list[tuple[str, Callable[[Outcome], object]]] = [
        ("merged", lambda o: o.merged),
        ("seconds", lambda o: f"{o.seconds:.1f}"),
        ("merges/min", lambda o: f"{rate(o):.1f}"),
        ("ratio to one slot", lambda o: f"{rate(o) / rate(one):.2f}"),
        ("trees checked", lambda o: o.stats.get("check_rounds", 0)),
        ("checks run", lambda o: o.stats.get("check_commands", 0)),
        ("runs to isolate culprit", lambda o: o.stats.get("isolate_runs", "-")),
        ("flaky recorded", lambda o: o.stats.get("flaky", "-")),
        ("longest wait (s)", lambda o: f"{max(o.waits):.1f}"),
        ("longest / median wait", lambda o: f"{wait_ratio(o):.2f}"),
        ("main_red", lambda o: o.main_red),
    ]
    for label, cell in rows:
        print(f"{label:26}{cell(one)!s:>12}" + "".join(f"{cell(o)!s:>12}" for o in batches))
    print(f"refused, one slot: {one.refused}")
    for b, o in zip(sizes, batches, strict=True):
        print(f"refused, batch {b}: {o.refused}")

    def figures_of(b: int, o: Outcome) -> dict[str, object]:
        return {
            "batch": b,
            "batch_merges_per_min": round(rate(o), 1),
            "ratio": round(rate(o) / rate(one), 2),
            "batch_check_runs": o.stats.get("check_rounds", 0),
            "batch_checks": o.stats.get("check_commands", 0),
            "culprit_isolation_runs": o.stats.get("isolate_runs", 0),
            "culprit_isolation_bound": math.ceil(math.log2(b)) + 1,
            "batch_longest_wait_s": round(max(o.waits), 1),
            "batch_wait_max_over_median": round(wait_ratio(o), 2),
            "batch_merged": o.merged,
            "main_red": o.main_red,
        }

    first = figures_of(sizes[0], batches[0])
    figures = {
        "one_slot_merges_per_min": round(rate(one), 1),
        "batch_merges_per_min": first["batch_merges_per_min"],
        "ratio": first["ratio"],
        "one_slot_check_runs": one.stats.get("check_rounds", 0),
        "batch_check_runs": first["batch_check_runs"],
        "one_slot_checks": one.stats.get("check_commands", 0),
        "batch_checks": first["batch_checks"],
        "culprit_isolation_runs": first["culprit_isolation_runs"],
        "culprit_isolation_bound": first["culprit_isolation_bound"],
        "one_slot_longest_wait_s": round(max(one.waits), 1),
        "batch_longest_wait_s": first["batch_longest_wait_s"],
        "one_slot_wait_max_over_median": round(wait_ratio(one), 2),
        "batch_wait_max_over_median": first["batch_wait_max_over_median"],
        "one_slot_merged": one.merged,
        "batch_merged": first["batch_merged"],
        "batch": sizes[0],
        "claims": n,
        "arrival_s": args.arrival_s,
        "main_red": one.main_red + sum(o.main_red for o in batches),
    }
    if len(sizes) > 1:
        figures["by_batch"] = [figures_of(b, o) for b, o in zip(sizes, batches, strict=True)]
    print(json.dumps(figures))


def main() -> None:
    if "--machinery" in sys.argv[1:]:
        machinery(sys.argv[1:])
    else:
        realistic(sys.argv[1:])


if __name__ == "__main__":
    main()
