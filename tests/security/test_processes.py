"""Issue 9: no process an agent started outlives its run, `setsid` children included,
whether `loops up` ends by itself or is killed with SIGKILL."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.security.conftest import (
    AGENTS,
    LOOPS,
    Findings,
    Loop,
    agent,
    assert_attack_failed,
    make_project,
    our_processes,
    reports,
    require_bwrap,
    up,
    up_env,
)

SCRIPT = str(AGENTS / "setsid_child.py")


def tick_file(root: Path) -> Path | None:
    found = list(root.rglob("setsid-tick.log"))
    found += [Path(r["path"]) for r in reports(root, "tick") if Path(r["path"]).exists()]
    return found[0] if found else None


def grows(path: Path, window_s: float = 2.0) -> bool:
    """Whether `path` grows within a bounded window (the child appends every 50 ms)."""
    size = path.stat().st_size
    try:
        wait_until(lambda: path.stat().st_size > size, timeout=window_s)
        return True
    except AssertionError:
        return False


def assert_nothing_left(f: Findings, root: Path) -> None:
    with f.check():
        try:
            wait_until(lambda: not our_processes(SCRIPT), timeout=5)
        except AssertionError:
            raise AssertionError(
                f"agent processes outlived the run: {our_processes(SCRIPT)}"
            ) from None
    with f.check():
        tick = tick_file(root)
        assert tick is not None, "the agent's child never wrote its file"
        assert not grows(tick), f"{tick} still grows after loops up ended"


def test_setsid_child_does_not_outlive_the_run(tmp_path: Path) -> None:
    require_bwrap()
    name = "setsid_exit"
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("setsid_child", name, "exit"))])
    result = up(root)
    f = Findings()
    assert_nothing_left(f, root)
    assert_attack_failed(root, [result], name, ["loop-1/ADD-1"], findings=f)


def test_kill_9_of_loops_up_kills_the_agent_and_its_setsid_child(tmp_path: Path) -> None:
    require_bwrap()
    name = "setsid_stay"
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("setsid_child", name, "stay"))])
    proc = subprocess.Popen(
        [LOOPS, "up", str(root), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=up_env(),
    )
    try:
        tick = wait_until(lambda: tick_file(root), timeout=30)
        assert tick is not None
        wait_until(lambda: tick.stat().st_size > 0, timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    f = Findings()
    assert_nothing_left(f, root)
    f.done()
