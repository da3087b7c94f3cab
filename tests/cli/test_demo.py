"""`loops demo`, the README's first command, as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra.git import git

LOOPS = str(Path(sys.executable).parent / "loops")


def test_demo_shows_every_behaviour_and_merges_everything(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    proc = subprocess.run(
        [LOOPS, "demo", "--dir", str(root)], capture_output=True, text=True, timeout=180
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    assert "All tasks verified and merged." in out
    # The five behaviours of the issue, as the event log tells them.
    assert "gate caught a false claim: loop-2-false-claim/SUB-1" in out
    assert "monitor: reset_task on loop-3-stuck/MUL-1" in out
    assert "question from loop-4-question/DIV-1" in out and "$ loops answer e-" in out
    assert "calc/ops.py was changed by loop-1-clean, loop-2-false-claim" in out
    assert "loop-4-question/DIV-1 started once loop-1-clean/ADD-1 had merged" in out
    assert out.index("merged: loop-1-clean/ADD-1") < out.index(
        "question from loop-4-question/DIV-1"
    )
    for task in ("ADD-1", "SUB-1", "MUL-1", "DIV-1"):
        assert f"/{task} as " in out
    # The repository to inspect: main holds one verified commit per task, and works.
    log = git(root, "log", "--format=%s", "main").splitlines()
    assert len(log) == 5 and all("verified by coding-loops" in s for s in log[:4])
    for check in ("check_add", "check_sub", "check_mul", "check_div"):
        subprocess.run(
            [sys.executable, "-m", f"tests.{check}"],
            cwd=root,
            check=True,
            capture_output=True,
            timeout=30,
        )
    state = json.loads((root / "loop-2-false-claim" / "specs" / "test-state.json").read_text())
    assert state["tests"][0]["status"] == "passed" and state["tests"][0]["attempts"] == 1
    assert state["summary"]["passed"] == 1
    assert f"git -C {root} log --oneline main" in out
