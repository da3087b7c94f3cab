"""Secrets never leave (invariant 7), end to end: a check prints a file holding an API
key and a database password (row 7 of issue 9), the agent's reply quotes them, and
`loops run -v` (a real subprocess on a real git repository, the embedded redis-server)
logs at DEBUG. Neither its output, nor the event stream, nor the server's append-only
file holds them; the stream holds `[REDACTED]` where they were."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bus import RedisBus
from events import VerificationFailed
from events.secrets import MASK
from infra.embedded import EmbeddedServer
from infra.git import git
from tests.conftest import IN_CI

LOOPS = str(Path(sys.executable).with_name("loops"))
ANTHROPIC = "sk-ant-api03-" + "Q7w8E9r0" * 8
PG = "pg-password-" + "x1y2z3" * 4


def test_a_printed_key_reaches_neither_logs_nor_stream_nor_aof(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("no redis-server on PATH; CI=true requires it")
        pytest.skip("no redis-server on PATH")
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "creds.txt").write_text(f"ANTHROPIC_API_KEY={ANTHROPIC}\nPGPASSWORD={PG}\n")
    spec = {
        "goal": "Show what the check sees",
        "tasks": [
            {
                "id": "leak",
                "title": "Print the credentials",
                "description": "a check that prints a file of secrets",
                "acceptance_criteria": [
                    {
                        "criterion": "never holds",
                        "check": {"type": "script", "run": "cat creds.txt; exit 1"},
                    }
                ],
            }
        ],
    }
    (repo / "SPEC.yaml").write_text(yaml.safe_dump(spec))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    script = {
        "default": [
            {
                "write": {"notes.txt": "done\n"},
                "reply": f"used {ANTHROPIC} and {PG}\n<promise>leak done</promise>",
            }
        ]
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(script))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "LOOPS_")) and k != "REDIS_URL"
    }
    env["PGPASSWORD"] = PG  # the operator's own environment holds it
    proc = subprocess.run(
        [
            LOOPS,
            "run",
            "SPEC.yaml",
            "-n",
            "1",
            "-v",
            "--agent",
            f"script:{tmp_path / 'agent.yaml'}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr  # the claim did not hold
    for secret in (ANTHROPIC, PG):
        assert secret not in proc.stdout + proc.stderr

    server = EmbeddedServer(repo, kind="redis-server")  # the run's data, from its AOF
    server.start()
    try:
        with RedisBus.from_settings(server.settings(prefix="loops")) as bus:
            raw = bus.client.xrange(bus.stream)
            failed = [e for _, e in bus.replay(types={"verification.failed"})]
    finally:
        server.stop()
    assert raw, "the run published nothing"
    for _, fields in raw:  # type: ignore[union-attr]
        for value in fields.values():
            assert ANTHROPIC.encode() not in value and PG.encode() not in value
    assert failed and isinstance(failed[0], VerificationFailed)
    assert failed[0].criteria[0].output_tail.count(MASK) == 2
    for path in (repo / ".loops" / "redis").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert ANTHROPIC.encode() not in data and PG.encode() not in data, path


def test_loops_up_log_file_is_redacted(tmp_path: Path) -> None:
    """On a terminal `loops up` logs to `.loops/loops.log`; a secret in what the roles
    log (here the agent's promise, which the worker logs) is masked there."""
    if shutil.which("script") is None or shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("`script` (util-linux) and redis-server are needed; CI=true requires them")
        pytest.skip("no `script` or redis-server on PATH")
    from tests.cli.test_up import ADD_DONE, one_loop_project

    root = one_loop_project(
        tmp_path / "p",
        [
            {
                "write": {"calc/ops.py": ADD_DONE},
                "reply": f"<promise>ADD-1 {ANTHROPIC} {PG}</promise>",
            }
        ],
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "LOOPS_")) and k != "REDIS_URL"
    }
    env["PGPASSWORD"] = PG
    command = f"{LOOPS} up {root} --port 0"
    # `script` gives `loops up` a terminal, as a person's shell does
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    log_file = root / ".loops" / "loops.log"
    assert log_file.exists(), proc.stdout[-2000:]
    text = log_file.read_text()
    assert "Promise detected" in text and MASK in text, text[-2000:]
    for secret in (ANTHROPIC, PG):
        assert secret not in text
        assert secret not in proc.stdout + proc.stderr
