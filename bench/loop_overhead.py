"""Harness overhead per iteration: from one agent run's end to the next one's start.

An instant in-process agent changes a file and replies (long) without ever claiming,
so the task keeps going for N iterations; its history, a huge last-failure output and
many hints pile up, which shows the prompt stays bounded. What is timed is the
worker's own work between runs: commit, evidence, events, transcripts, state files,
prompt building. No checks run.

    python bench/loop_overhead.py [--iterations 50] [--redis URL]

Then the same loop with a real agent process (`command:`, a shell one-liner that edits
a file and replies), with the bubblewrap sandbox on and off: the time from one agent
launch to the next, which is the harness's work plus starting the (sandboxed) process,
an upper bound of the overhead an agent CLI sees.

Prints a table, then as its last line one JSON object:
{"overhead_ms_p50": ..., "overhead_ms_p99": ..., "prompt_bytes_max": ...,
 "process_iteration_ms_p50_sandbox_on": ..., "process_iteration_ms_p50_sandbox_off": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fakeredis

from bus import BusSettings, RedisBus, connect
from infra.git import git
from loops.books import SpecBook
from loops.runners import AgentRequest, AgentResult, AgentRunner, make_runner
from loops.sandbox import sandbox_status
from loops.service import WorkerService
from loops.spec import parse_spec

SPEC = """
goal: "Benchmark the harness"
context: "A task that never passes."
tasks:
  - id: never
    title: "Never done"
    description: "Keep working."
    acceptance_criteria:
      - criterion: "impossible"
        check: {type: script, run: "false"}
"""


class InstantAgent:
    """Edits one file and answers at once; records when each run starts and ends."""

    name = "bench:instant"

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.prompt_bytes: list[int] = []

    def run(self, request: AgentRequest) -> AgentResult:
        self.starts.append(time.perf_counter())
        self.prompt_bytes.append(len(request.prompt.encode()))
        (request.worktree / "work.txt").write_text(f"iteration {request.iteration}\n")
        reply = f"Still working on it (iteration {request.iteration}). " + "detail " * 300
        self.ends.append(time.perf_counter())
        return AgentResult(reply=reply, duration_s=0.0)


class TimedRunner:
    """A real runner, timed: when each run starts (its process launch included)."""

    def __init__(self, runner: AgentRunner) -> None:
        self.runner = runner
        self.name = runner.name
        self.starts: list[float] = []

    def run(self, request: AgentRequest) -> AgentResult:
        self.starts.append(time.perf_counter())
        return self.runner.run(request)


AGENT = 'command:echo "$LOOPS_ITERATION" > work.txt && echo still working'


def process_iterations(iterations: int, sandbox: str) -> list[float]:
    """Start-to-start milliseconds of a loop whose agent is a real process."""
    os.environ["LOOPS_SANDBOX"] = sandbox
    with tempfile.TemporaryDirectory(prefix="loops-bench-") as tmp:
        repo = make_repo(Path(tmp))
        client = fakeredis.FakeRedis(protocol=2)
        bus = RedisBus(client, settings=BusSettings(prefix=f"bench-{uuid.uuid4().hex[:8]}"))
        book = SpecBook(parse_spec(SPEC), repo / "SPEC.yaml", repo / ".loops" / "state", iterations)
        agent = TimedRunner(make_runner(AGENT))
        service = WorkerService(bus, book, agent, repo, heartbeat_s=60)
        service.run(threading.Event(), until_idle=True)
        client.close()
    return [(b - a) * 1000 for a, b in zip(agent.starts, agent.starts[1:], strict=False)]


def make_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--redis", default=None, help="Redis URL (default: in-process fakeredis)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="loops-bench-") as tmp:
        repo = make_repo(Path(tmp))
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        if args.redis:
            client = connect(args.redis)
            backend = f"Redis at {args.redis}"
        else:
            client = fakeredis.FakeRedis(protocol=2)
            backend = "in-process fakeredis"
        bus = RedisBus(client, settings=BusSettings(prefix=prefix))
        book = SpecBook(
            parse_spec(SPEC),
            repo / "SPEC.yaml",
            repo / ".loops" / "state",
            max_iterations=args.iterations,
        )
        agent = InstantAgent()
        service = WorkerService(bus, book, agent, repo, heartbeat_s=60)
        # The worst case for the prompt: a huge failure output and many hints.
        rt = service.worker.state.task("never")
        rt.last_failure = "E   AssertionError: " + "x" * 200_000
        rt.guidance = [f"hint {i}: " + "be careful " * 40 for i in range(200)]
        started = time.perf_counter()
        service.run(threading.Event(), until_idle=True)
        wall = time.perf_counter() - started
        bus.delete_all()
        client.close()

    gaps_ms = [(s - e) * 1000 for e, s in zip(agent.ends, agent.starts[1:], strict=False)]
    sandboxed = process_iterations(args.iterations, "auto")
    status = sandbox_status()  # with LOOPS_SANDBOX=auto, as the sandboxed run had it
    unsandboxed = process_iterations(args.iterations, "off")
    figures = {
        "overhead_ms_p50": round(statistics.median(gaps_ms), 2),
        "overhead_ms_p99": round(percentile(gaps_ms, 0.99), 2),
        "prompt_bytes_max": max(agent.prompt_bytes),
        "process_iteration_ms_p50_sandbox_on": round(statistics.median(sandboxed), 2),
        "process_iteration_ms_p50_sandbox_off": round(statistics.median(unsandboxed), 2),
        "sandbox_active": status.active,
    }
    print(f"loop overhead: {len(agent.starts)} iterations on {backend}, {wall:.1f}s wall")
    print(f"{'figure':<28}{'value':>12}")
    print(f"{'overhead p50 (ms)':<28}{figures['overhead_ms_p50']:>12}")
    print(f"{'overhead p99 (ms)':<28}{figures['overhead_ms_p99']:>12}")
    print(f"{'overhead max (ms)':<28}{round(max(gaps_ms), 2):>12}")
    print(f"{'prompt bytes, first run':<28}{agent.prompt_bytes[0]:>12}")
    print(f"{'prompt bytes, max':<28}{figures['prompt_bytes_max']:>12}")
    print(f"real agent process ({AGENT}), launch to launch:")
    on, off = (
        figures["process_iteration_ms_p50_sandbox_on"],
        figures["process_iteration_ms_p50_sandbox_off"],
    )
    print(
        f"{'p50, sandbox on (ms)':<28}{on:>12}" + ("" if status.active else "  (bwrap unavailable)")
    )
    print(f"{'p50, sandbox off (ms)':<28}{off:>12}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
