"""`loops up` when Redis goes away mid-run and comes back (a `redis-server` of the
test's own with an append-only file, stopped while the agent works and started again
on the same port): the roles wait it out, every task merges, and the output holds
no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.bus.ownserver import OwnRedis
from tests.cli.test_up import ADD_DONE, LOOPS, env, one_loop_project
from tests.conftest import wait_until


def waiting_step(marker: Path, started: Path) -> list[dict[str, object]]:
    """The agent's run: says it started, then waits until the test creates `marker`."""
    wait = f"touch {started}; while [ ! -f {marker} ]; do sleep 0.05; done"
    return [
        {
            "write": {"calc/ops.py": ADD_DONE},
            "run": [wait],
            "reply": "<promise>ADD-1 done</promise>",
        }
    ]


def test_loops_up_waits_out_a_redis_restart_and_finishes(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = OwnRedis(tmp_path / "redis", persistent=True).start()
    marker, started = tmp_path / "go-ahead", tmp_path / "agent-started"
    root = one_loop_project(tmp_path / "p", waiting_step(marker, started))
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [LOOPS, "up", str(root), "--redis", server.url],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            # the agent signals through files outside its workspace
            env={**env(), "LOOPS_SANDBOX": "off"},
        )
    try:
        wait_until(started.exists, timeout=90)
        server.stop()  # the agent is mid-run: its claim will find no server
        marker.touch()
        wait_until(lambda: "lost Redis" in log.read_text(), timeout=60)
        server.start()
        up.wait(timeout=180)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=10)
        server.stop()
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert up.returncode == 0, output[-3000:]
    assert "All tasks verified and merged." in output
