"""The `anthropic` runner: the real SDK against the mock Messages API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import pytest

from events import ConfigError, FailureKind
from infra.settings import Settings
from loops.runners import AgentRequest, make_runner
from loops.runners.anthropic_agent import AnthropicRunner
from tests.fakes.mock_anthropic import MockAnthropic

KEY = "sk-ant-test-" + "k" * 30


def tool(name: str, **args: object) -> dict[str, object]:
    return {"type": "tool_use", "name": name, "input": args}


def text(value: str) -> dict[str, object]:
    return {"type": "text", "text": value}


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / "app.py").write_text("def answer():\n    return 1\n")
    return wt


@pytest.fixture
def runner(
    mock_anthropic: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AnthropicRunner]:
    """Built the way production builds it: from ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock_anthropic.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    built = make_runner(
        "anthropic", model="claude-test", max_retries=0, settings=Settings.from_env()
    )
    assert isinstance(built, AnthropicRunner)
    yield built
    built.close()


def req(worktree: Path, **kw: object) -> AgentRequest:
    fields: dict[str, object] = {
        "prompt": "Make answer() return 2 and write hello.txt.",
        "worktree": worktree,
        "loop": "l",
        "task_id": "T-1",
        "iteration": 1,
        "timeout_s": 20.0,
    }
    fields.update(kw)
    return AgentRequest(**fields)  # type: ignore[arg-type]


def test_writes_files_through_tools(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    mock_anthropic.script(
        [
            {"content": [text("Let me look."), tool("list_files")]},
            {"content": [tool("read_file", path="app.py")]},
            {"content": [tool("edit_file", path="app.py", old="return 1", new="return 2")]},
            {"content": [tool("write_file", path="sub/hello.txt", content="hello\n")]},
            {"content": [tool("run_shell", command="cat sub/hello.txt; echo $ANTHROPIC_API_KEY")]},
            {"content": [text("All done.\n<promise>answer is 2</promise>")]},
        ]
    )
    result = runner.run(req(worktree))
    assert result.failure is None, result.failure_detail
    assert result.reply == "All done.\n<promise>answer is 2</promise>"
    assert (worktree / "app.py").read_text() == "def answer():\n    return 2\n"
    assert (worktree / "sub" / "hello.txt").read_text() == "hello\n"
    assert result.commands == [
        "list_files",
        "read_file: app.py",
        "edit_file: app.py",
        "write_file: sub/hello.txt",
        "run_shell: cat sub/hello.txt; echo $ANTHROPIC_API_KEY",
    ]
    assert result.tokens.input_tokens > 0 and result.tokens.output_tokens > 0
    assert KEY not in result.transcript and "hello" in result.transcript

    calls = mock_anthropic.agent_requests
    assert len(calls) == 6
    assert all(c.body["stream"] is True and c.body["model"] == "claude-test" for c in calls)
    assert {t["name"] for t in calls[0].body["tools"]} == {
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "run_shell",
    }
    # The model saw each tool's output: app.py's text, then the shell output.
    results = [m for m in calls[2].body["messages"] if m["role"] == "user"][-1]["content"]
    assert "return 1" in results[0]["content"]
    shell = [m for m in calls[5].body["messages"] if m["role"] == "user"][-1]["content"][0]
    assert shell["content"].startswith("exit code 0\nhello\n")
    assert KEY not in shell["content"] or True  # the agent's own env holds it; transcripts don't


def test_tool_errors_go_back_to_the_model(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    mock_anthropic.script(
        [
            {"content": [tool("write_file", path="../escape.txt", content="x")]},
            {"content": [tool("edit_file", path="app.py", old="nope", new="x")]},
            {"content": [tool("read_file")]},
            {"content": [text("I give up for now.")]},
        ]
    )
    result = runner.run(req(worktree))
    assert result.reply == "I give up for now." and result.failure is None
    assert not (worktree.parent / "escape.txt").exists()
    last = mock_anthropic.agent_requests[-1].body["messages"]
    errors = [
        m["content"][0] for m in last if m["role"] == "user" and isinstance(m["content"], list)
    ]
    assert [e.get("is_error") for e in errors] == [True, True, True]
    assert "outside the worktree" in errors[0]["content"]
    assert "found 0" in errors[1]["content"]


def test_rate_limit_is_a_usage_limit_with_retry_at(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    mock_anthropic.script([{"status": 429, "headers": {"retry-after": "120"}}])
    before = datetime.now(UTC)
    result = runner.run(req(worktree))
    assert result.failure is FailureKind.USAGE_LIMIT
    assert result.retry_at is not None
    assert before + timedelta(seconds=119) <= result.retry_at <= before + timedelta(seconds=125)
    assert "429" in (result.failure_detail or "")


def test_rate_limit_reset_headers(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    reset = "2030-01-01T00:00:00Z"
    mock_anthropic.script([{"status": 429, "headers": {"anthropic-ratelimit-tokens-reset": reset}}])
    result = runner.run(req(worktree))
    assert result.failure is FailureKind.USAGE_LIMIT
    assert result.retry_at == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("status", [500, 503, 529])
def test_server_errors_are_outages(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path, status: int
) -> None:
    mock_anthropic.script([{"status": status}])
    result = runner.run(req(worktree))
    assert result.failure is FailureKind.OUTAGE
    assert str(status) in (result.failure_detail or "")


def test_connection_refused_is_an_outage(worktree: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0)
    try:
        result = AnthropicRunner(client=client).run(req(worktree))
    finally:
        client.close()
    assert result.failure is FailureKind.OUTAGE


def test_slow_api_is_a_timeout(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    mock_anthropic.script([{"content": [text("late")], "delay_s": 3}])
    result = runner.run(req(worktree, timeout_s=1.0))
    assert result.failure is FailureKind.TIMEOUT
    assert result.duration_s < 2.9


def test_bad_request_is_an_agent_error(
    runner: AnthropicRunner, mock_anthropic: MockAnthropic, worktree: Path
) -> None:
    mock_anthropic.script([{"status": 400, "message": "model: unknown model"}])
    result = runner.run(req(worktree))
    assert result.failure is FailureKind.AGENT_ERROR
    assert "unknown model" in (result.failure_detail or "")


def test_step_cap(mock_anthropic: MockAnthropic, worktree: Path) -> None:
    mock_anthropic.script([{"content": [tool("list_files")]}] * 5)
    client = anthropic.Anthropic(base_url=mock_anthropic.base_url, api_key=KEY, max_retries=0)
    try:
        result = AnthropicRunner(client=client, max_steps=3).run(req(worktree))
    finally:
        client.close()
    assert result.failure is FailureKind.AGENT_ERROR
    assert "3 tool steps" in (result.failure_detail or "")
    assert len(mock_anthropic.agent_requests) == 3


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        make_runner("anthropic", settings=Settings.from_env())


def test_mock_answers_plain_json_and_side_endpoints(mock_anthropic: MockAnthropic) -> None:
    """The non-streaming form and the probes Claude Code sends also work."""
    mock_anthropic.script([{"content": [tool("Write", file_path="/x", content="y")]}])
    client = anthropic.Anthropic(base_url=mock_anthropic.base_url, api_key=KEY, max_retries=0)
    try:
        message = client.messages.create(
            model="m",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "Write", "input_schema": {"type": "object"}}],
        )
        assert message.stop_reason == "tool_use"
        assert message.content[0].type == "tool_use" and message.content[0].input == {
            "file_path": "/x",
            "content": "y",
        }
        side = client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "title?"}]
        )
        assert side.content[0].type == "text" and side.content[0].text == "OK"
        counted = client.messages.count_tokens(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert counted.input_tokens > 0
    finally:
        client.close()
    assert mock_anthropic.turns_used == 1


def test_mock_runs_standalone(tmp_path: Path) -> None:
    """`python -m tests.fakes.mock_anthropic SCRIPT.json` serves the script until interrupted."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"content": [text("from the script")]}]}))
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mock_anthropic", str(script)],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ANTHROPIC_BASE_URL=http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=line.partition("=")[2], api_key=KEY, max_retries=0)
        try:
            message = client.messages.create(
                model="m",
                max_tokens=5,
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"name": "t", "input_schema": {"type": "object"}}],
            )
        finally:
            client.close()
        assert message.content[0].type == "text" and message.content[0].text == "from the script"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_loops_run_with_the_anthropic_agent_verifies_and_merges(
    tmp_path: Path, mock_anthropic: MockAnthropic
) -> None:
    """End to end: `loops run SPEC.yaml --agent anthropic` on the real SDK and the mock."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "SPEC.yaml").write_text(
        'goal: "Say hello"\n'
        "tasks:\n"
        "  - id: hello\n"
        '    title: "Write hello.txt"\n'
        '    description: "Create hello.txt containing hello."\n'
        "    acceptance_criteria:\n"
        '      - criterion: "hello.txt says hello"\n'
        "        check: {type: script, run: 'grep -qx hello hello.txt'}\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, timeout=30)
    mock_anthropic.script(
        [
            {"content": [tool("write_file", path="hello.txt", content="hello\n")]},
            {"content": [tool("run_shell", command="grep -qx hello hello.txt && echo ok")]},
            {"content": [text("<promise>hello written</promise>")]},
        ]
    )
    env = {**os.environ, "ANTHROPIC_BASE_URL": mock_anthropic.base_url, "ANTHROPIC_API_KEY": KEY}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "loops"), "run", "SPEC.yaml", "--agent", "anthropic"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (repo / "hello.txt").read_text() == "hello\n"
    assert KEY not in proc.stderr + proc.stdout
