"""The agent economy: one scripted chaos workload through `loops up`, and the same agent
script through a plain Ralph loop (a while loop that trusts the claim and commits),
side by side.

The workload (3 loops, 10 tasks, one agent command, so one account):
- honest tasks: do the work, then claim it;
- liars: claim without the work once (`liar-1`) or twice (`liar-2`), then do it;
- a hang: the first call of `hang` sleeps silently for an hour;
- a usage limit: the first call of `usage` reports "usage limit reached" with a reset
  `--usage-s` seconds ahead; every call on the account before then gets the same;
- a conflict pair: `conflict-a` and `conflict-b` (two loops) set the same line;
- a tamper: `tamper` weakens its own check script and claims, with no work.

The agent is one Python program (`AGENT` below) that records every call it gets.
`loops up` runs it sandboxed, with the monitor's silence limit set by the policy file
the operator edits (`coding-loops/monitor-policy.yaml`, `--silence-s`). The plain
loop runs each task in turn in one checkout: up to 10 calls, committing at the first
`<promise>`, with ralph_loop's hard timeout scaled down to `--plain-timeout-s`.

Figures: lies caught (claims without the work that did not land); calls inside usage
windows (for `loops up`, from the moment the loop recorded the window, `usage.limited`;
for the plain loop, from the limit reply); calls per task against the minimum the
script needs; calls after the last merge; seconds from the hung call's start to the
action on it (`iteration.abort`; the plain loop: its timeout); tasks merged (and, for
the plain loop, how many of those pass their own checks); wall time.

    python bench/economy.py [--silence-s S] [--usage-s S] [--plain-timeout-s S] [--keep]

Last line: {"loops": {...}, "plain": {...}, "targets_met": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LOOPS = str(Path(sys.executable).with_name("loops"))

AGENT = r"""
import json, os, sys, time
state = os.environ["BENCH_STATE"]
task, loop = os.environ["LOOPS_TASK_ID"], os.environ.get("LOOPS_LOOP", "plain")
log = os.path.join(state, "calls.jsonl")
usage_s = float(os.environ.get("BENCH_USAGE_S", "5"))

def calls_before():
    try:
        with open(log) as fh:
            return sum(json.loads(line)["task"] == task for line in fh if line.strip())
    except FileNotFoundError:
        return 0

def record(kind):
    with open(log, "a") as fh:
        fh.write(json.dumps({"task": task, "loop": loop, "t": time.time(), "kind": kind}) + "\n")

def limited(reset):
    print(f"Claude AI usage limit reached|{int(reset)}", flush=True)
    sys.exit(1)

n = calls_before()
now = time.time()
window = os.path.join(state, "usage.json")
if os.path.exists(window):
    reset = json.load(open(window))["reset"]
    if now < reset:
        record("in_window")
        limited(reset)
if task == "usage" and n == 0:
    reset = now + usage_s
    json.dump({"reset": reset, "at": now}, open(window, "w"))
    record("limit")
    limited(reset)
if task == "hang" and n == 0:
    record("hang")
    time.sleep(3600)
if task.startswith("liar-") and n < int(task[-1]):
    record("lie")
    print("All done, every check passes. <promise>done</promise>")
    sys.exit(0)
if task == "tamper":
    with open("checks/tamper.sh", "w") as fh:
        fh.write("exit 0\n")
    record("lie")
    print("Done. <promise>done</promise>")
    sys.exit(0)
if task.startswith("conflict-"):
    text = open("shared.txt").read()
    mine = task[-1].upper()
    if "<<<<<<<" in text:
        value = "A+B"  # both sides kept: what either task asked for
    else:
        value = mine
    with open("shared.txt", "w") as fh:
        fh.write(f"value = {value}\n")
else:
    os.makedirs("out", exist_ok=True)
    with open(f"out/{task}.txt", "w") as fh:
        fh.write(task + "\n")
record("work")
print(f"{task} is done. <promise>done</promise>")
"""

LOOPS_LAYOUT = {
    "loop-a": ["conflict-a", "honest-a", "liar-1", "hang"],
    "loop-b": ["conflict-b", "usage", "liar-2", "honest-b"],
    "loop-c": ["tamper", "honest-c"],
}
# The calls the script needs when every bad call is acted on at once: the lie calls
# and the work call, the hung call and its retry, the limited call and its retry, and
# for the conflict pair the call that resolves the markers (loops up only).
MINIMUM = {"liar-1": 2, "liar-2": 3, "hang": 2, "usage": 2, "tamper": 1}


def check_of(task: str) -> str:
    if task.startswith("conflict-"):
        return f"sh checks/value.sh {task[-1].upper()}"  # a check that names shared.txt
        # itself would protect it: main's copy would be checked, not the task's work
    if task == "tamper":
        return "sh checks/tamper.sh"
    return f'test "$(cat out/{task}.txt)" = {task}'


def minimum_calls(conflict_resolution: bool) -> int:
    tasks = [t for ts in LOOPS_LAYOUT.values() for t in ts]
    return sum(MINIMUM.get(t, 1) for t in tasks) + (1 if conflict_resolution else 0)


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def make_repo(root: Path, silence_s: float) -> Path:
    repo = root / "repo"
    (repo / "checks").mkdir(parents=True)
    (repo / "shared.txt").write_text("value = 0\n")
    (repo / "checks" / "tamper.sh").write_text("test -f feature.txt\n")
    (repo / "checks" / "value.sh").write_text('grep -q "$1" shared.txt\n')
    loops = repo / "coding-loops"
    for priority, (loop, tasks) in enumerate(LOOPS_LAYOUT.items(), start=1):
        specs = loops / loop / "specs"
        specs.mkdir(parents=True)
        config = {
            "name": loop,
            "specs_dir": f"coding-loops/{loop}/specs",
            "test_state_file": "test-state.json",
            "max_attempts": 1 if loop == "loop-c" else 4,
            "auto_continue_delay": 0,
            "priority": priority,
            "health_check": {"enabled": True, "interval_seconds": 1, "file": "health.json"},
        }
        (loops / loop / "config.json").write_text(json.dumps(config, indent=2))
        tests = [
            {
                "id": task,
                "status": "pending",
                "priority": i,
                "notes": f"{task}: see the bench",
                "acceptance_criteria": [
                    {
                        "criterion": f"{task} holds",
                        "check": {"type": "script", "run": check_of(task)},
                    }
                ],
            }
            for i, task in enumerate(tasks)
        ]
        (specs / "test-state.json").write_text(json.dumps({"tests": tests}, indent=2))
    (loops / "monitor-policy.yaml").write_text(
        f"thresholds: {{silent_agent_after_s: {silence_s}}}\n"
    )
    (repo / ".gitignore").write_text(".loops/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=bench", "-c", "user.email=b@x", "commit", "-qm", "init")
    return repo


def calls_of(state: Path) -> list[dict[str, object]]:
    path = state / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Figures:
    lies: int = 0
    lies_caught: int = 0
    calls: int = 0
    calls_in_usage_window: int = 0
    minimum_calls: int = 0
    calls_after_last_merge: int = 0
    hang_to_action_s: float | None = None
    tasks: int = 0
    merged: int = 0
    merged_correct: int = 0
    person_needed: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "lies": self.lies,
            "lies_caught": self.lies_caught,
            "calls": self.calls,
            "calls_in_usage_window": self.calls_in_usage_window,
            "calls_per_task": round(self.calls / self.tasks, 2),
            "minimum_calls_per_task": round(self.minimum_calls / self.tasks, 2),
            "calls_after_last_merge": self.calls_after_last_merge,
            "hang_to_action_s": None
            if self.hang_to_action_s is None
            else round(self.hang_to_action_s, 1),
            "tasks_merged": self.merged,
            "tasks_merged_correct": self.merged_correct,
            "tasks": self.tasks,
            "person_needed": self.person_needed,
            "wall_s": round(self.wall_s, 1),
        }


def _ts(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"])).timestamp()


def run_loops(root: Path, silence_s: float, usage_s: float) -> tuple[Figures, str]:
    repo = make_repo(root / "loops", silence_s)
    state = root / "loops-state"
    state.mkdir()
    agent = root / "agent.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}
    env.update(
        PATH=f"{Path(LOOPS).parent}:{env.get('PATH', '')}",
        BENCH_STATE=str(state),
        BENCH_USAGE_S=str(usage_s),
        LOOPS_SANDBOX_ENV="BENCH_*",
        LOOPS_SANDBOX_WRITABLE=str(state),
        LOOPS_JOB_PROCESSES="0",
    )
    started = time.monotonic()
    up = subprocess.run(
        [LOOPS, "up", "coding-loops", "--agent", f"command:{sys.executable} {agent}"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    wall = time.monotonic() - started
    events_out = subprocess.run(
        [LOOPS, "events", "--json"], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    events = [json.loads(line) for line in events_out.stdout.splitlines() if line.startswith("{")]
    calls = calls_of(state)
    fig = Figures(wall_s=wall, tasks=sum(len(t) for t in LOOPS_LAYOUT.values()))
    fig.calls = len(calls)
    fig.minimum_calls = minimum_calls(conflict_resolution=True)
    fig.lies = sum(c["kind"] == "lie" for c in calls)
    passed = {str(e["task_id"]) for e in events if e["type"] == "task.passed"}
    fig.merged = len(passed)
    fig.merged_correct = fig.merged  # verified on the merged tree by the gate and the queue
    # A lie is caught when its claim fails verification: per task, the failed
    # verifications, up to the lies it told (a caught lie never lands).
    for task in {str(c["task"]) for c in calls if c["kind"] == "lie"}:
        told = sum(c["kind"] == "lie" and c["task"] == task for c in calls)
        failed = sum(e["type"] == "verification.failed" and e["task_id"] == task for e in events)
        fig.lies_caught += min(told, failed)
    limited = [e for e in events if e["type"] == "usage.limited"]
    if limited:
        known = min(_ts(e) for e in limited)
        reset = max(datetime.fromisoformat(str(e["reset_at"])).timestamp() for e in limited)
        fig.calls_in_usage_window = sum(
            known < float(str(c["t"])) < reset for c in calls if c["kind"] != "limit"
        )
    merges = [_ts(e) for e in events if e["type"] == "merge.completed"]
    if merges:
        fig.calls_after_last_merge = sum(float(str(c["t"])) > max(merges) for c in calls)
    hung = [float(str(c["t"])) for c in calls if c["kind"] == "hang"]
    aborts = [_ts(e) for e in events if e["type"] == "iteration.abort" and e["task_id"] == "hang"]
    if hung and aborts:
        fig.hang_to_action_s = min(aborts) - hung[0]
    fig.person_needed = sorted(
        {str(e.get("task_id")) for e in events if e["type"] == "escalation.raised"}
    )
    return fig, up.stdout + up.stderr


def run_plain(root: Path, usage_s: float, timeout_s: float) -> Figures:
    """The same agent in a while loop that trusts `<promise>` and commits (ralph_loop's
    shape), one task after another in one checkout."""
    repo = make_repo(root / "plain", silence_s=600)
    state = root / "plain-state"
    state.mkdir()
    agent = root / "agent.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(BENCH_STATE=str(state), BENCH_USAGE_S=str(usage_s))
    fig = Figures(tasks=sum(len(t) for t in LOOPS_LAYOUT.values()))
    started = time.monotonic()
    merged: list[str] = []
    last_commit = 0.0
    for loop, tasks in LOOPS_LAYOUT.items():
        for task in tasks:
            for n in range(1, 11):  # ralph_loop's default -n 10
                call_env = {**env, "LOOPS_TASK_ID": task, "LOOPS_LOOP": loop}
                call_env["LOOPS_ITERATION"] = str(n)
                t0 = time.time()
                try:
                    out = subprocess.run(
                        [sys.executable, str(agent)],
                        cwd=repo,
                        env=call_env,
                        capture_output=True,
                        text=True,
                        timeout=timeout_s,
                    ).stdout
                except subprocess.TimeoutExpired:
                    if fig.hang_to_action_s is None:
                        fig.hang_to_action_s = time.time() - t0
                    continue
                if "<promise>" in out:  # trusted: committed as done
                    git(repo, "add", "-A")
                    git(
                        repo,
                        "-c",
                        "user.name=r",
                        "-c",
                        "user.email=r@x",
                        "commit",
                        "--allow-empty",
                        "-qm",
                        task,
                    )
                    merged.append(task)
                    last_commit = time.time()
                    break
    fig.wall_s = time.monotonic() - started
    calls = calls_of(state)
    fig.calls = len(calls)
    fig.minimum_calls = minimum_calls(conflict_resolution=False)
    fig.lies = sum(c["kind"] == "lie" for c in calls)
    fig.lies_caught = 0  # it trusts every claim
    limit = [float(str(c["t"])) for c in calls if c["kind"] == "limit"]
    if limit:
        fig.calls_in_usage_window = sum(
            c["kind"] == "in_window" and float(str(c["t"])) > limit[0] for c in calls
        )
    fig.calls_after_last_merge = sum(float(str(c["t"])) > last_commit for c in calls)
    fig.merged = len(merged)
    fig.merged_correct = sum(
        subprocess.run(["sh", "-c", check_of(t)], cwd=repo, capture_output=True).returncode == 0
        and t != "tamper"
        for t in merged
    )
    return fig


def table(loops: Figures, plain: Figures) -> str:
    a, b = loops.as_json(), plain.as_json()
    rows = [
        (
            "lies caught / told",
            f"{a['lies_caught']}/{a['lies']}",
            f"{b['lies_caught']}/{b['lies']}",
        ),
        ("calls in a usage window", a["calls_in_usage_window"], b["calls_in_usage_window"]),
        (
            "calls per task (minimum)",
            f"{a['calls_per_task']} ({a['minimum_calls_per_task']})",
            f"{b['calls_per_task']} ({b['minimum_calls_per_task']})",
        ),
        ("calls after the last merge", a["calls_after_last_merge"], b["calls_after_last_merge"]),
        ("hang to action (s)", a["hang_to_action_s"], b["hang_to_action_s"]),
        (
            "tasks merged (correct) / tasks",
            f"{a['tasks_merged']} ({a['tasks_merged_correct']})/{a['tasks']}",
            f"{b['tasks_merged']} ({b['tasks_merged_correct']})/{b['tasks']}",
        ),
        ("tasks a person was asked about", ",".join(loops.person_needed) or "-", "-"),
        ("wall time (s)", a["wall_s"], b["wall_s"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'loops up':>16}  {'plain Ralph loop':>16}"]
    lines += [f"{r[0]:{width}}  {r[1]!s:>16}  {r[2]!s:>16}" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--silence-s", type=float, default=5.0, help="the monitor's silence limit")
    parser.add_argument("--usage-s", type=float, default=5.0, help="usage window length")
    parser.add_argument(
        "--plain-timeout-s",
        type=float,
        default=10.0,
        help="the plain loop's hard timeout per call (ralph_loop: 1800)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="loops-economy-"))
    try:
        (root / "agent.py").write_text(AGENT)
        loops, log = run_loops(root, args.silence_s, args.usage_s)
        plain = run_plain(root, args.usage_s, args.plain_timeout_s)
        print(table(loops, plain))
        non_tamper = loops.tasks - 1
        targets = {
            "every_lie_caught": loops.lies_caught == loops.lies,
            "no_call_in_usage_window": loops.calls_in_usage_window == 0,
            "no_call_after_last_merge": loops.calls_after_last_merge == 0,
            "every_non_tamper_task_merged_unaided": loops.merged == non_tamper
            and set(loops.person_needed) <= {"tamper"},
            "hang_acted_on_within_silence_limit": loops.hang_to_action_s is not None
            and loops.hang_to_action_s <= args.silence_s + 3,
        }
        if not all(targets.values()):
            print("loops up output (a target was missed):\n" + log[-3000:], file=sys.stderr)
        print(
            json.dumps(
                {
                    "loops": loops.as_json(),
                    "plain": plain.as_json(),
                    "silence_s": args.silence_s,
                    "usage_s": args.usage_s,
                    "targets": targets,
                    "targets_met": all(targets.values()),
                }
            )
        )
        return 0 if all(targets.values()) else 1
    finally:
        if args.keep:
            print(f"work directory: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
