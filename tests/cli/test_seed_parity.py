"""The coding-loops harness's `run_loop.py` flags on `loops worker` and `loops up`
(issue 16): `--config PATH`, `--max-iterations N`, `--model M`; precedence flag, then
config.json, then the default. Real `loops` subprocesses, a real repository, the
embedded bus, and a real agent executable (the fake `claude` CLI) that records how it
was called."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from app import demo
from infra.git import git
from tests.cli.test_up import LOOPS, env

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "fake_claude.py"
ADD_DONE = demo.OPS.replace('    raise NotImplementedError("add")', "    return a + b")


def two_loop_project(root: Path) -> Path:
    """The demo project cut down to loop-1 (ADD-1) and loop-2 (SUB-1)."""
    demo.create(root)
    git(root, "rm", "-rq", "loop-3-stuck", "loop-4-question")
    git(root, "commit", "-qm", "two loops")
    return root


def set_config(root: Path, loop: str, **fields: object) -> Path:
    path = root / loop / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config, indent=2))
    git(root, "commit", "-qam", f"{loop}: {sorted(fields)}")
    return path


def claude_env(record: Path) -> dict[str, str]:
    # The fake claims done every time without writing code: verification fails each time,
    # so only the iteration budget ends the run.
    return {
        **env(),
        "LOOPS_CLAUDE_BIN": str(FAKE_CLAUDE),
        "FAKE_CLAUDE_RECORD": str(record),
        "LOOPS_SANDBOX_ENV": "FAKE_CLAUDE_*",  # the agent's environment is an allow-list
        "LOOPS_SANDBOX_WRITABLE": str(record.parent),  # and it writes only where allowed
    }


def runs(record: Path) -> list[dict[str, object]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def models(record: Path) -> list[str]:
    out = []
    for run in runs(record):
        argv = [str(a) for a in run["argv"]]  # type: ignore[union-attr]
        out.append(argv[argv.index("--model") + 1] if "--model" in argv else "")
    return out


def loops(*args: str, cwd: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOPS, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def test_worker_config_runs_that_loop_alone_with_gate_and_merge(tmp_path: Path) -> None:
    root = two_loop_project(tmp_path / "proj")
    config = root / "loop-1-clean" / "config.json"
    proc = loops("worker", "--config", str(config), cwd=tmp_path, environ=env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loop-1-clean: 1/1 tasks verified and merged" in proc.stdout
    assert "loop-2-false-claim" not in proc.stdout  # the other loop did not run
    assert "return a + b" in git(root, "show", "main:calc/ops.py")
    assert "Traceback" not in proc.stderr


def test_max_iterations_and_model_flag_beat_the_config(tmp_path: Path) -> None:
    root = two_loop_project(tmp_path / "proj")
    config = set_config(root, "loop-1-clean", model="model-from-config", max_attempts=9)
    record = tmp_path / "record.jsonl"
    proc = loops(
        "worker",
        "--config",
        str(config),
        "--max-iterations",
        "2",
        "--model",
        "claude-sonnet-4-20250514",
        "--agent",
        "claude",
        cwd=root,
        environ=claude_env(record),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert models(record) == ["claude-sonnet-4-20250514"] * 2
    assert "Traceback" not in proc.stderr


def test_without_the_flag_the_config_model_is_used_and_a_rerun_gets_a_fresh_budget(
    tmp_path: Path,
) -> None:
    root = two_loop_project(tmp_path / "proj")
    set_config(root, "loop-1-clean", model="model-from-config", max_attempts=9)
    record = tmp_path / "record.jsonl"
    for _ in range(2):
        proc = loops(
            "worker",
            "loop-1-clean",
            "--max-iterations",
            "1",
            "--agent",
            "claude",
            cwd=root,
            environ=claude_env(record),
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
    # -n / --max-iterations count this run's agent calls, not a running total.
    assert models(record) == ["model-from-config"] * 2


def test_up_overrides_apply_to_every_loop(tmp_path: Path) -> None:
    root = two_loop_project(tmp_path / "proj")
    record = tmp_path / "record.jsonl"
    proc = loops(
        "up",
        str(root),
        "--port",
        "0",
        "--agent",
        "claude",
        "--max-iterations",
        "1",
        "--model",
        "claude-sonnet-4-20250514",
        cwd=root,
        environ=claude_env(record),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert models(record) == ["claude-sonnet-4-20250514"] * 2  # one run for each loop
    cwds = sorted(Path(str(r["cwd"])).name for r in runs(record))
    assert cwds == ["loop-1-clean", "loop-2-false-claim"]


def test_bad_flag_values_are_one_line(tmp_path: Path) -> None:
    root = two_loop_project(tmp_path / "proj")
    proc = loops("worker", "loop-1-clean", "--max-iterations", "0", cwd=root, environ=env())
    assert proc.returncode == 2
    assert "--max-iterations: must be at least 1, got 0" in proc.stderr
    proc = loops("worker", "--config", str(root / "nope.json"), cwd=root, environ=env())
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"loops: --config {root / 'nope.json'}: no such file"
    ]
    proc = loops("worker", cwd=root, environ=env())
    assert proc.returncode == 1
    assert "name a LOOP, or give --config" in proc.stderr


def test_help_lists_the_harness_flags() -> None:
    for command in ("worker", "up"):
        proc = subprocess.run([LOOPS, command, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        for flag in ("--max-iterations", "--model"):
            assert flag in proc.stdout
    assert (
        "--config"
        in subprocess.run([LOOPS, "worker", "--help"], capture_output=True, text=True).stdout
    )
