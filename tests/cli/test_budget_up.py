"""Budgets end to end: `loops up` killed with SIGKILL mid-call does not forget the call
(the ledger counted it when it started), and the next `loops up` stops at the budget;
`loops plan` / `loops up --dry-run` print the estimate and start nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from app import demo
from bus.spend import SpendLedger, loop_scope
from cli.main import main
from events import utcnow
from loops.workspace import git
from tests.cli.test_up import (
    LOOPS,
    agent_processes,
    env,
    kill_embedded_server,
    one_loop_project,
    project_bus,
)
from tests.conftest import wait_until


def loops(*args: str) -> str:
    proc = subprocess.run([LOOPS, *args], capture_output=True, text=True, timeout=60, env=env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_kill_9_mid_call_keeps_the_call_counted_and_the_budget_holds(tmp_path: Path) -> None:
    marker = tmp_path / "go-ahead"
    # The first call hangs until `marker` exists; no call ever claims the task.
    step = {"run": [f"test -f {marker} || sleep 300 # {marker}"], "reply": "still working"}
    root = one_loop_project(tmp_path / "p", [step])
    (root / "project.json").write_text(json.dumps({"budget": {"loop": {"calls": 2}}}))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a budget of two calls")
    first = subprocess.Popen(
        [LOOPS, "up", str(root), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )
    try:
        with project_bus(root) as bus:
            wait_until(lambda: agent_processes(marker), timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            for pid in agent_processes(marker):  # an orphaned agent (unsandboxed runs)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ledger = SpendLedger(bus.client, bus.prefix)
            assert ledger.spent(loop_scope("loop-1-clean"), utcnow()).calls == 1
        marker.touch()
        again = subprocess.run(
            [LOOPS, "up", str(root), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env(),
        )
        out = again.stdout + again.stderr
        assert again.returncode == 1, out
        assert "Traceback" not in out
        assert "loop budget of loop-1-clean: 2 calls of 2 calls" in out, out
        # From another terminal, between runs (the embedded server's data is kept).
        shown = loops("budget", "--json", "--dir", str(root))
        rows = {r["scope"]: r for r in json.loads(shown)["scopes"]}
        assert rows["loop:loop-1-clean"]["spent"]["calls"] == 2
        assert rows["loop:loop-1-clean"]["limit"] == {"calls": 2}  # from project.json
        assert json.loads(shown)["open_calls"] == 0  # the restart closed the killed call
        # The killed call and one more: the restart did not get a fresh budget.
        started = loops("events", "--json", "--type", "iteration.started", "--dir", str(root))
        assert len(started.splitlines()) == 2, started
        spent = loops("events", "--json", "--type", "budget.exhausted", "--dir", str(root))
        assert [json.loads(line)["metric"] for line in spent.splitlines()] == ["calls"]
    finally:
        if first.poll() is None:
            first.kill()
        kill_embedded_server(root)


def test_plan_and_dry_run_print_the_estimate_and_start_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = demo.create(tmp_path / "p")
    (root / "project.json").write_text(
        json.dumps({"budget": {"task": {"usd": 2, "calls": 4}, "project": {"usd": 5}}})
    )
    assert main(["plan", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    first = data["loops"][0]
    assert first["tasks"] and first["tasks"][0]["worst"]["usd"] == 2
    assert first["tasks"][0]["worst"]["calls"] == 4
    assert data["worst"]["usd"] == 5  # the sum of the loops, capped by the project
    assert main(["up", str(root), "--dry-run", "--max-tokens", "1000"]) == 0
    out = capsys.readouterr().out
    assert "project: worst case $5.00, 1000 tokens, 16 calls" in out, out
    assert "Dry run: nothing started." in out
    assert not (root / ".loops").exists()
