"""Many loops on one machine: `loops up` with N loops of 2 tasks each (no overlap, an
instant scripted agent), against a plain script that runs the same agent step, the
same check and a commit, sequentially.

    python bench/scale.py [--loops 10,30,60,100] [--tasks 2] [--batch 5,10]

`loops up` runs as an operator runs it (a subprocess, the embedded redis-server). While
it runs, its threads and memory (/proc, its own process and its children) and the
server's client connections (`CLIENT LIST`) are sampled; at the end, Redis calls per
published event (`INFO commandstats` over the stream's length, the sampler's own
INFO/CLIENT/XLEN calls left out) and, from the stream (the server is started again
on its append-only file), the median wait from a claim to its verification's start.

Prints a table, then as its last line one JSON object: {"runs": [{"loops": N, "wall_s",
"merged", "tasks", "s_per_task", "plain_s_per_task", "ratio", "threads",
"redis_connections", "calls_per_event", "mb_per_loop", "claim_to_verify_median_s",
"traceback"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import yaml

from bus import RedisBus, connect
from events import TaskClaimed, VerificationStarted
from infra.embedded import EmbeddedServer, recorded_settings
from infra.git import git

LOOPS_BIN = str(Path(sys.executable).parent / "loops")


def make_project(
    root: Path, loops: int, tasks: int, recheck: bool = True, batch: int | None = None
) -> list[str]:
    """`loops` loops in the seed layout, `tasks` tasks each; each task's agent writes
    one file of its own and claims; its check is that the file exists. `recheck`:
    project.json's `recheck_merged` (each merge re-runs every merged task's checks);
    `batch`: its `merge_batch_size` (None: the default)."""
    root.mkdir(parents=True)
    project: dict[str, object] = {}
    if not recheck:
        project["recheck_merged"] = False
    if batch is not None:
        project["merge_batch_size"] = batch
    if project:
        (root / "project.json").write_text(json.dumps(project))
    (root / "README.md").write_text("scale bench\n")
    (root / ".gitignore").write_text(".loops/\nhealth.json\nlogs/\n")
    names = []
    for i in range(loops):
        name = f"loop-{i:03d}"
        names.append(name)
        specs = root / name / "specs"
        specs.mkdir(parents=True)
        config = {
            "name": name,
            "specs_dir": f"{name}/specs",
            "test_state_file": "test-state.json",
            "max_attempts": 3,
            "auto_continue_delay": 0,
            "priority": 1,
            "health_check": {"enabled": True, "interval_seconds": 10, "file": "health.json"},
            "agent": "script:agent.yaml",
        }
        (root / name / "config.json").write_text(json.dumps(config))
        entries, script = [], {}
        for k in range(tasks):
            task = f"T{k + 1}"
            out = f"out/{name}-{task}.txt"
            entries.append(
                {
                    "id": task,
                    "category": "bench",
                    "status": "pending",
                    "attempts": 0,
                    "lastResult": None,
                    "dependsOn": None,
                    "automatable": True,
                    "notes": task,
                    "title": f"Write {out}",
                    "description": f"Write {out}.",
                    "acceptance_criteria": [
                        {
                            "criterion": f"{out} exists",
                            "check": {"type": "script", "run": f"test -f {out}"},
                        }
                    ],
                }
            )
            script[task] = [
                {"write": {out: f"{task}\n"}, "reply": f"<promise>{task} done</promise>"}
            ]
        state = {
            "tests": entries,
            "summary": {"total": tasks, "passed": 0, "failed": 0, "blocked": 0, "pending": tasks},
        }
        (specs / "test-state.json").write_text(json.dumps(state))
        (root / name / "agent.yaml").write_text(yaml.safe_dump({"tasks": script}))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qm", "bench")
    return names


def plain(root: Path, names: list[str], tasks: int) -> float:
    """The same work without the harness: per task, the agent's step (write the file),
    the check, a commit; sequentially. Seconds per task."""
    started = time.perf_counter()
    for name in names:
        for k in range(tasks):
            out = root / "out" / f"{name}-T{k + 1}.txt"
            out.parent.mkdir(exist_ok=True)
            out.write_text(f"T{k + 1}\n")
            subprocess.run(["sh", "-c", f"test -f {out}"], cwd=root, check=True)
            git(root, "add", "-A")
            git(root, "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qm", out.name)
    return (time.perf_counter() - started) / (len(names) * tasks)


def _proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS"):
                fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields


class Sampler:
    """Samples `loops up` (threads, memory) and its Redis (connections, calls) until stopped."""

    def __init__(self, proc: subprocess.Popen[bytes], root: Path) -> None:
        self.proc, self.root = proc, root
        self.threads = self.rss_kb = self.connections = 0
        self.calls = self.entries = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _redis(self) -> tuple[redis.Redis, str] | None:
        try:
            settings = recorded_settings(self.root)
        except Exception:
            return None
        if settings is None:
            return None
        return connect(settings.with_(socket_connect_timeout=1.0)), f"{settings.prefix}:events"

    def _run(self) -> None:
        client = None
        stream = ""
        while not self.stop.wait(0.25):
            pids = [p for p in _proc_tree(self.proc.pid) if "redis" not in _cmd(p)]
            stats = [_status(p) for p in pids]
            main = stats[0] if stats else {}
            self.threads = max(self.threads, main.get("Threads", 0))
            self.rss_kb = max(self.rss_kb, sum(s.get("VmRSS", 0) for s in stats))
            if client is None:
                found = self._redis()
                if found is None:
                    continue
                client, stream = found
            try:
                self.connections = max(self.connections, len(client.client_list()) - 1)
                commandstats: Any = client.info("commandstats")
                self.calls = sum(
                    int(v["calls"])
                    for k, v in commandstats.items()
                    if not k.startswith(("cmdstat_info", "cmdstat_client", "cmdstat_xlen"))
                    and k != "cmdstat_auth"
                )
                self.entries = int(client.xlen(stream))
            except redis.RedisError:
                pass
        if client is not None:
            client.close()


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def claim_to_verify(root: Path) -> float | None:
    """Median seconds from each claim to its verification's start (the stream, read
    back from the embedded server's append-only file)."""
    server = EmbeddedServer(root)
    server.start()
    try:
        with RedisBus.from_settings(server.settings()) as bus:
            claims: dict[tuple[str | None, str], float] = {}
            waits = []
            for _, event in bus.replay(types={"task.claimed", "verification.started"}):
                if isinstance(event, TaskClaimed):
                    claims[(event.loop, event.commit)] = event.ts.timestamp()
                elif isinstance(event, VerificationStarted):
                    at = claims.pop((event.loop, event.commit), None)
                    if at is not None:
                        waits.append(event.ts.timestamp() - at)
    finally:
        server.stop()
    return round(statistics.median(waits), 3) if waits else None


def run_one(
    n: int, tasks: int, tmp: Path, recheck: bool = True, batch: int | None = None
) -> dict[str, Any]:
    tag = f"{n}" if batch is None else f"{n}-b{batch}"
    root = tmp / f"up-{tag}"
    names = make_project(root, n, tasks, recheck, batch)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "REDIS_URL"))}
    log = tmp / f"up-{tag}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [LOOPS_BIN, "up", str(root)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        sampler = Sampler(proc, root)
        code = proc.wait()
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.thread.join(timeout=10)
    text = log.read_text(errors="replace")
    merged = sum(int(m) for m in re.findall(r"^\s+loop-\d+: (\d+)/\d+ tasks verified", text, re.M))
    wait = claim_to_verify(root)
    plain_root = tmp / f"plain-{tag}"
    make_project(plain_root, n, tasks)
    plain_s = plain(plain_root, names, tasks)
    total = n * tasks
    return {
        "loops": n,
        "recheck_merged": recheck,
        "merge_batch_size": batch,
        "exit": code,
        "wall_s": round(wall, 1),
        "merged": merged,
        "tasks": total,
        "s_per_task": round(wall / total, 3),
        "plain_s_per_task": round(plain_s, 3),
        "ratio": round(wall / total / plain_s, 1),
        "target_s_per_task": round(3 * plain_s + 0.5, 3),
        "threads": sampler.threads,
        "redis_connections": sampler.connections,
        "calls_per_event": round(sampler.calls / sampler.entries, 1) if sampler.entries else None,
        "mb_per_loop": round(sampler.rss_kb / 1024 / n, 1),
        "claim_to_verify_median_s": wait,
        "traceback": "Traceback" in text,
        "log": str(log) if "Traceback" in text or merged < total else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default="10,30,60,100", help="comma-separated N")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument(
        "--no-recheck",
        action="store_true",
        help="project.json recheck_merged: false (merges do not re-run merged tasks' checks)",
    )
    parser.add_argument(
        "--batch",
        default=None,
        help="project.json merge_batch_size, comma-separated: each N runs with each size "
        "(default: the project default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the projects and logs")
    args = parser.parse_args()
    runs = []
    tmp = Path(tempfile.mkdtemp(prefix="loops-scale-"))
    header = (
        f"{'N':>4} {'wall':>7} {'merged':>9} {'s/task':>7} {'plain':>6} {'ratio':>6} "
        f"{'target':>7} {'thr':>4} {'conns':>5} {'calls/ev':>8} {'MB/loop':>7} {'claim>verify':>12} tb"
    )
    print(
        f"scale: `loops up` with N loops x {args.tasks} tasks, instant scripted agent, "
        f"recheck_merged={not args.no_recheck} ({tmp})"
    )
    print(header)
    sizes = [int(b) for b in args.batch.split(",")] if args.batch else [None]
    for n, batch in ((int(x), b) for x in args.loops.split(",") for b in sizes):
        r = run_one(n, args.tasks, tmp, recheck=not args.no_recheck, batch=batch)
        runs.append(r)
        print(
            ("" if batch is None else f"B={batch} ")
            + f"{n:>4} {r['wall_s']:>6}s {r['merged']:>4}/{r['tasks']:<4} {r['s_per_task']:>7} "
            f"{r['plain_s_per_task']:>6} {'x' + str(r['ratio']):>6} {r['target_s_per_task']:>7} "
            f"{r['threads']:>4} {r['redis_connections']:>5} {r['calls_per_event']!s:>8} "
            f"{r['mb_per_loop']:>7} {r['claim_to_verify_median_s']!s:>12} "
            f"{'yes' if r['traceback'] else 'no'}",
            flush=True,
        )
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
