"""A stopping loop (`AgentRequest.cancel` set) kills its running agent, whatever the runner."""

from __future__ import annotations

import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anthropic
import pytest

from events import FailureKind
from infra.settings import Settings
from loops.runners import INTERRUPTED_DETAIL as INTERRUPTED
from loops.runners import AgentRequest, AgentResult, AgentRunner, make_runner
from loops.runners.anthropic_agent import AnthropicRunner
from tests.conftest import wait_until
from tests.fakes.mock_anthropic import MockAnthropic
from tests.loops.test_runners_command import pid_alive

FAKE = Path(__file__).resolve().parent.parent / "fakes" / "fake_claude.py"


def run_and_cancel(
    runner: AgentRunner, tmp_path: Path, started: Callable[[], object]
) -> AgentResult:
    """Run in a thread, set `cancel` once `started()` holds, return the result."""
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    cancel = threading.Event()
    request = AgentRequest(
        prompt="p", worktree=wt, loop="l", task_id="T", iteration=1, timeout_s=60, cancel=cancel
    )
    results: list[AgentResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.run(request)))
    thread.start()
    try:
        wait_until(started, timeout=20)
    finally:
        cancel.set()
        thread.join(20)
    assert not thread.is_alive() and results
    result = results[0]
    assert result.failure is FailureKind.AGENT_ERROR
    assert result.failure_detail == INTERRUPTED
    return result


def test_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "wt" / "child.pid"
    runner = make_runner(f"command:sleep 60 & echo $! > {pid_file}; wait")
    run_and_cancel(runner, tmp_path, lambda: pid_file.exists() and pid_file.read_text())
    wait_until(lambda: not pid_alive(int(pid_file.read_text())), timeout=5)


def test_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv(
        "LOOPS_CLAUDE_BIN", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))}"
    )
    monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", "hang")
    monkeypatch.setenv("LOOPS_SANDBOX_ENV", "FAKE_CLAUDE_*")
    monkeypatch.setenv("FAKE_CLAUDE_CHILD_PID", str(pid_file))
    result = run_and_cancel(
        make_runner("claude", settings=Settings.from_env()),
        tmp_path,
        lambda: pid_file.exists() and pid_file.read_text(),
    )
    assert result.session_id  # the init line came before the hang
    wait_until(lambda: not pid_alive(int(pid_file.read_text())), timeout=5)


def test_script_sleep_and_command(tmp_path: Path) -> None:
    script = tmp_path / "agent.yaml"
    marker = tmp_path / "wt" / "running"
    script.write_text('- write: {running: "yes"}\n  sleep: 60\n  reply: never\n')
    run_and_cancel(make_runner(f"script:{script}"), tmp_path, marker.exists)

    marker.unlink()
    script.write_text(f"- run: touch {marker}; sleep 60\n  reply: never\n")
    run_and_cancel(make_runner(f"script:{script}"), tmp_path, marker.exists)


def test_anthropic(tmp_path: Path, mock_anthropic: MockAnthropic) -> None:
    marker = tmp_path / "wt" / "running"
    mock_anthropic.script(
        [
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "run_shell",
                        "input": {"command": f"touch {marker}; sleep 60"},
                    }
                ]
            }
        ]
    )
    client = anthropic.Anthropic(base_url=mock_anthropic.base_url, api_key="k", max_retries=0)
    try:
        run_and_cancel(AnthropicRunner(client=client), tmp_path, marker.exists)
    finally:
        client.close()
    assert len(mock_anthropic.agent_requests) == 1  # no further model call after the cancel
