"""The sandbox is loud when it is not there: `loops up` and `loops run` print one
WARNING line before any agent runs, `loops status` shows it from the stream, and a loop
that requires the sandbox refuses to start without it (one line, exit 1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from infra.git import git
from tests.cli.test_up import ADD_DONE, LOOPS, env, one_loop_project

STEP = [{"write": {"calc/ops.py": ADD_DONE}, "reply": "<promise>ADD-1 done</promise>"}]


def test_sandbox_off_is_one_warning_in_up_and_in_status(tmp_path: Path) -> None:
    root = one_loop_project(tmp_path / "proj", STEP)
    environ = {**env(), "LOOPS_SANDBOX": "off"}
    proc = subprocess.run(
        [LOOPS, "up", str(root), "--port", "0"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING: ")]
    assert len(warnings) == 1 and "sandbox is off" in warnings[0]
    status = subprocess.run(
        [LOOPS, "status"], cwd=root, env=env(), capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert "WARNING: the agent sandbox is off" in status.stdout


def test_a_required_sandbox_without_bwrap_refuses_in_one_line(tmp_path: Path) -> None:
    root = one_loop_project(tmp_path / "proj", STEP)
    config_path = root / "loop-1-clean" / "config.json"
    config = json.loads(config_path.read_text())
    config["sandbox"] = {"mode": "required"}
    config_path.write_text(json.dumps(config))
    git(root, "commit", "-qam", "sandbox required")
    bin_dir = tmp_path / "bin"  # git and python, but no bwrap
    bin_dir.mkdir()
    for tool in ("git", "python3", "sh", "bash"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    environ = {**env(), "PATH": f"{Path(LOOPS).parent}:{bin_dir}"}
    proc = subprocess.run(
        [LOOPS, "up", str(root), "--port", "0"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sandbox: required" in lines[0], proc.stderr
    assert "apt-get install bubblewrap" in lines[0]
    assert not (root / ".loops" / "worktrees").exists()  # nothing started
