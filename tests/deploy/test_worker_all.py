"""`loops worker --all` (compose's `loops` service): every loop of the project in one
process against the distributed bus (one `bus.Router` subscription for them all), with
the gate and the merge queue as their own processes. Both loops' tasks are verified and
merged; SIGTERM ends every process with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app import demo
from bus import BusSettings, RedisBus, router_group
from infra.git import git
from tests.conftest import require_real_redis, wait_until

LOOPS = str(Path(sys.executable).parent / "loops")


def two_loops(root: Path) -> Path:
    """loop-1 adds; loop-3 writes mul() at once (no stuck agent, no question)."""
    demo.create(root)
    git(root, "rm", "-rq", "loop-2-false-claim", "loop-4-question")
    script = {
        "tasks": {
            "MUL-1": [
                {
                    "write": {"calc/mul.py": "def mul(a, b):\n    return a * b\n"},
                    "reply": "<promise>MUL-1 done</promise>",
                }
            ]
        }
    }
    (root / "loop-3-stuck" / "agent.yaml").write_text(yaml.safe_dump(script))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "two loops")
    return root


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    url = require_real_redis()
    prefix = f"test-all-{uuid.uuid4().hex[:8]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "ANTHROPIC_"))}
    base.pop("REDIS_URL", None)  # --redis only: the gate verifies in-process, no rq
    yield {**base, "LOOPS_PREFIX": prefix, "TEST_REDIS_URL": url}
    bus = RedisBus.from_settings(BusSettings.from_dsn(url, prefix=prefix))
    try:
        bus.delete_all()
    finally:
        bus.close()


def test_worker_all_runs_every_loop_to_main(tmp_path: Path, env: dict[str, str]) -> None:
    root = two_loops(tmp_path / "p")
    url = env["TEST_REDIS_URL"]
    procs = {
        role: subprocess.Popen(
            [LOOPS, *args, "--redis", url, "--dir", str(root)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for role, args in (("loops", ["worker", "--all"]), ("gate", ["gate"]), ("merge", ["merge"]))
    }
    try:

        def merged() -> bool:
            for role, proc in procs.items():
                assert proc.poll() is None, f"{role} exited: {proc.communicate()[0]}"
            ops = git(root, "show", "main:calc/ops.py")
            files = git(root, "ls-tree", "--name-only", "main", "calc/").split()
            return "return a + b" in ops and "calc/mul.py" in files

        wait_until(merged, timeout=120, interval=0.5)
        # One Router subscription for the process (as `loops up`), not a group per loop.
        bus = RedisBus.from_settings(BusSettings.from_dsn(url, prefix=env["LOOPS_PREFIX"]))
        try:
            names = {g["name"] for g in bus.client.xinfo_groups(bus.stream)}
        finally:
            bus.close()
        names = {n.decode() if isinstance(n, bytes) else n for n in names}
        workers = sorted(n for n in names if n.startswith("worker"))
        assert workers == [router_group(["loop-1-clean", "loop-3-stuck"])], names
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        outputs = {}
        for role, proc in procs.items():
            outputs[role] = proc.communicate(timeout=60)[0]
            assert proc.returncode == 0, f"{role} exited {proc.returncode}:\n{outputs[role]}"
        assert "worker:all started" in outputs["loops"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_worker_all_takes_no_loop_name(tmp_path: Path, env: dict[str, str]) -> None:
    root = two_loops(tmp_path / "p")
    proc = subprocess.run(
        [
            LOOPS,
            "worker",
            "--all",
            "loop-1-clean",
            "--redis",
            env["TEST_REDIS_URL"],
            "--dir",
            str(root),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "--all runs every loop" in proc.stderr and "Traceback" not in proc.stderr
