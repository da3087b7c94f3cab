"""Script checks: secrets stripped, output capped, hanging process groups killed, each
check of a concurrent run held to its own timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gates.checks import Check, run_checks, run_script, scrubbed_env
from tests.conftest import wait_until


def test_secrets_are_stripped_from_the_environment() -> None:
    env = scrubbed_env(
        {
            "PATH": "/bin",
            "HOME": "/root",
            "ANTHROPIC_API_KEY": "sk-1",
            "GITHUB_TOKEN": "t",
            "MY_SECRET": "s",
            "STRIPE_KEY": "k",
            "AWS_REGION": "eu",
            "DB_PASSWORD": "p",
            "GIT_DIR": "/elsewhere",
            "LANG": "C",
        }
    )
    assert env == {"PATH": "/bin", "HOME": "/root", "LANG": "C"}


def test_a_check_does_not_see_secrets(tmp_path: Path) -> None:
    env = scrubbed_env({**os.environ, "ANTHROPIC_API_KEY": "sk-secret"})
    result = run_script("env", tmp_path, criterion="env", env=env)
    assert result.passed and "sk-secret" not in result.output_tail


def test_output_is_cut_to_its_tail(tmp_path: Path) -> None:
    cmd = "for i in $(seq 1 5000); do echo line-$i; done; exit 3"
    result = run_script(cmd, tmp_path, criterion="noisy", tail_bytes=200)
    assert result.passed is False and result.exit_code == 3
    assert result.output_tail.endswith("line-5000\n") and "line-1\n" not in result.output_tail
    assert len(result.output_tail) < 260


def test_a_hanging_check_and_its_children_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = f"sleep 300 & echo $! > {pidfile}; echo started; wait"
    start = time.monotonic()
    result = run_script(cmd, tmp_path, criterion="hangs", timeout_s=0.5)
    assert time.monotonic() - start < 10
    assert result.timed_out and result.passed is False and result.exit_code is None
    assert "started" in result.output_tail and "timeout" in result.output_tail
    child = int(pidfile.read_text())
    wait_until(lambda: not _alive(child), timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_concurrent_checks_keep_their_order_and_their_own_timeouts(tmp_path: Path) -> None:
    checks = [
        Check("slow but in time", "sleep 0.2; echo one", timeout_s=30),
        Check("hangs", "sleep 60", timeout_s=0.5),
        Check("fails", "echo two; exit 4"),
    ]
    results = run_checks(checks, tmp_path, workers=2, default_timeout_s=30)
    assert [r.criterion for r in results] == ["slow but in time", "hangs", "fails"]
    assert results[0].passed and "one" in results[0].output_tail
    assert results[1].timed_out and results[1].passed is False
    assert results[2].exit_code == 4 and "two" in results[2].output_tail
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.pgid*"))  # notes removed


def test_fail_fast_does_not_start_the_checks_after_a_failure(tmp_path: Path) -> None:
    checks = [Check("fails", "exit 1"), Check("later", "touch later")]
    results = run_checks(checks, tmp_path, workers=1, fail_fast=True)
    assert [r.criterion for r in results] == ["fails"] and not results[0].passed
    assert not (tmp_path / "later").exists()
    every = run_checks(checks, tmp_path, workers=1)
    assert [r.passed for r in every] == [False, True] and (tmp_path / "later").exists()
