"""The REAL Claude Code CLI through the `claude` runner, against the mock Messages API.

`.ci/run` installs `@anthropic-ai/claude-code` at a pinned version into `.ci/node/`.
Locally a missing CLI skips these tests; under CI=true it fails them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from events import FailureKind, IterationOutcome
from infra.settings import Settings
from loops.runners import AgentRequest, make_runner
from loops.runners.outcome import outcome_of
from tests.fakes.claude_cli import MOCK_KEY, claude_cli_env, find_claude
from tests.fakes.mock_anthropic import MockAnthropic

KEY = MOCK_KEY


@pytest.fixture
def claude_env(
    tmp_path: Path, mock_anthropic: MockAnthropic, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """LOOPS_CLAUDE_BIN, and the environment the CLI needs to talk to the mock only."""
    monkeypatch.setenv("LOOPS_CLAUDE_BIN", find_claude())
    return claude_cli_env(mock_anthropic.base_url, tmp_path / "claude-config")


def req(tmp_path: Path, env: dict[str, str], **kw: object) -> AgentRequest:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "prompt": "Create hello.txt containing 'hello', then say you are done.",
        "worktree": wt,
        "loop": "real",
        "task_id": "T-1",
        "iteration": 1,
        "timeout_s": 90.0,
        "env": env,
    }
    fields.update(kw)
    return AgentRequest(**fields)  # type: ignore[arg-type]


def test_real_cli_writes_a_file_and_resumes_its_session(
    tmp_path: Path, mock_anthropic: MockAnthropic, claude_env: dict[str, str]
) -> None:
    wt = tmp_path / "wt"
    mock_anthropic.script(
        [
            {
                "content": [
                    {"type": "text", "text": "I'll create the file."},
                    {
                        "type": "tool_use",
                        "name": "Write",
                        "input": {"file_path": str(wt / "hello.txt"), "content": "hello\n"},
                    },
                ]
            },
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {"command": "cat hello.txt", "description": "Show the file"},
                    }
                ]
            },
            {"content": [{"type": "text", "text": "Done.\n<promise>hello written</promise>"}]},
        ]
    )
    runner = make_runner(
        "claude", model="claude-mock-model", skip_permissions=True, settings=Settings.from_env()
    )
    result = runner.run(req(tmp_path, claude_env))

    assert result.failure is None, f"{result.failure_detail}\n{result.transcript[-3000:]}"
    assert (wt / "hello.txt").read_text() == "hello\n"
    assert result.reply == "Done.\n<promise>hello written</promise>"
    assert outcome_of(result).kind is IterationOutcome.CLAIMED
    assert result.session_id and len(result.session_id) == 36
    assert result.commands[0].startswith("Write: ") and result.commands[1] == "Bash: cat hello.txt"
    assert result.tokens.input_tokens > 0 and result.tokens.output_tokens > 0
    assert result.cost_usd is not None
    assert KEY not in result.transcript
    agent_calls = mock_anthropic.agent_requests
    assert len(agent_calls) == 3
    assert agent_calls[0].body["model"] == "claude-mock-model"
    assert agent_calls[0].body["stream"] is True
    # The Bash tool's output went back to the model.
    assert "hello" in str(agent_calls[2].body["messages"][-1])

    # Next iteration: the same session, by id. The model sees the earlier conversation.
    mock_anthropic.script([{"content": [{"type": "text", "text": "Still done."}]}])
    again = runner.run(req(tmp_path, claude_env, iteration=2, session_id=result.session_id))
    assert again.failure is None, again.failure_detail
    assert again.reply == "Still done."
    assert again.session_id == result.session_id
    assert "hello written" in str(mock_anthropic.agent_requests[-1].body["messages"])


@pytest.mark.parametrize(
    ("turn", "kind"),
    [
        ({"status": 429, "headers": {"retry-after": "30"}}, FailureKind.USAGE_LIMIT),
        ({"status": 529}, FailureKind.OUTAGE),
    ],
)
def test_real_cli_api_failures_are_typed(
    tmp_path: Path,
    mock_anthropic: MockAnthropic,
    claude_env: dict[str, str],
    turn: dict[str, object],
    kind: FailureKind,
) -> None:
    mock_anthropic.script([turn])
    runner = make_runner(
        "claude", model="claude-mock-model", skip_permissions=True, settings=Settings.from_env()
    )
    result = runner.run(req(tmp_path, claude_env))
    assert result.failure is kind, f"{result.failure_detail}\n{result.transcript[-2000:]}"


SPEC = """goal: "Say hello"
tasks:
  - id: hello
    title: "Write hello.txt"
    description: "Create hello.txt containing the word hello."
    acceptance_criteria:
      - criterion: "hello.txt says hello"
        check:
          type: script
          run: "grep -qx hello hello.txt"
"""


def test_loops_run_with_the_real_cli_catches_a_false_claim_then_merges(
    tmp_path: Path, mock_anthropic: MockAnthropic, claude_env: dict[str, str]
) -> None:
    """End to end, as an operator runs it: `loops run SPEC.yaml --agent claude`.

    The model first claims done without doing anything; the harness's own check fails
    that claim. Then it writes the file through the CLI's Bash tool and claims again;
    the check passes and the work lands on the user's branch.
    """
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "SPEC.yaml").write_text(SPEC)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, timeout=30)
    mock_anthropic.script(
        [
            {"content": [{"type": "text", "text": "All good. <promise>hello written</promise>"}]},
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {"command": "printf 'hello\\n' > hello.txt", "description": "w"},
                    }
                ]
            },
            {"content": [{"type": "text", "text": "Now really. <promise>hello written</promise>"}]},
        ]
    )
    env = {
        **os.environ,
        **claude_env,
        "LOOPS_CLAUDE_PERMISSION_MODE": "skip",
    }
    loops = Path(sys.executable).parent / "loops"
    proc = subprocess.run(
        [str(loops), "run", "SPEC.yaml", "-n", "4", "--agent", "claude"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "done in 2 iteration(s)" in proc.stderr
    assert (repo / "hello.txt").read_text() == "hello\n"
    assert len(mock_anthropic.agent_requests) == 3
    # The second iteration resumed the first one's session: it still sees the first claim.
    assert "All good." in str(mock_anthropic.agent_requests[1].body["messages"])
    # Each call's cost is the CLI's own total_cost_usd, and the cost line says so; the
    # merged task's receipt counts both calls, the rejected claim as the failed one.
    assert proc.stderr.count("(reported by the agent;") == 2, proc.stderr[-4000:]
    (receipt,) = [line for line in proc.stderr.splitlines() if "spec/hello: $" in line]
    assert "2 agent call(s) (1 failed, $" in receipt and "2 verification run(s)" in receipt
    assert "Spend: $" in proc.stderr and "on 1 merged task(s)" in proc.stderr


def test_real_cli_in_the_sandbox_keeps_its_session_and_sees_no_state(
    tmp_path: Path, mock_anthropic: MockAnthropic, claude_env: dict[str, str], bwrap: str
) -> None:
    """Sandboxed: the CLI writes its work tree and its own config dir (so `--resume`
    works), and its Bash tool finds nothing of the project's state directory."""
    from infra.git import git
    from loops.workspace import Workspace

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hi\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    (repo / ".loops").mkdir()
    (repo / ".loops" / "redis.url").write_text("redis://:hunter2hunter2@127.0.0.1:6379/0\n")
    ws = Workspace(repo, "real", "main")
    ws.ensure()
    mock_anthropic.script(
        [
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Write",
                        "input": {"file_path": str(ws.path / "hello.txt"), "content": "hello\n"},
                    }
                ]
            },
            {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Bash",
                        "input": {
                            "command": f"cat {repo}/.loops/redis.url; ls -a {repo}",
                            "description": "Look around",
                        },
                    }
                ]
            },
            {"content": [{"type": "text", "text": "Done.\n<promise>hello written</promise>"}]},
        ]
    )
    runner = make_runner(
        "claude", model="claude-mock-model", skip_permissions=True, settings=Settings.from_env()
    )
    sandboxed = {"worktree": ws.path, "sandbox": ws.sandbox_policy()}
    result = runner.run(req(tmp_path, claude_env, **sandboxed))
    assert result.failure is None, f"{result.failure_detail}\n{result.transcript[-3000:]}"
    assert (ws.path / "hello.txt").read_text() == "hello\n"
    tool_output = str(mock_anthropic.agent_requests[2].body["messages"][-1])
    assert "hunter2" not in tool_output and "README.md" not in tool_output
    mock_anthropic.script([{"content": [{"type": "text", "text": "Still done."}]}])
    again = runner.run(
        req(tmp_path, claude_env, iteration=2, session_id=result.session_id, **sandboxed)
    )
    assert again.failure is None, again.failure_detail
    assert again.session_id == result.session_id
    assert "hello written" in str(mock_anthropic.agent_requests[-1].body["messages"])


def test_loops_run_max_cost_stops_the_real_cli_at_its_own_reported_cost(
    tmp_path: Path, mock_anthropic: MockAnthropic, claude_env: dict[str, str]
) -> None:
    """`loops run --max-cost` (issue 14) on the real CLI: its `total_cost_usd` is what the
    budget counts. The model never finishes; the first call's reported cost already
    passes the tiny limit, so no second call reaches the API and the run ends held."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "SPEC.yaml").write_text(SPEC)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, timeout=30)
    mock_anthropic.script([{"content": [{"type": "text", "text": "Still thinking."}]}] * 4)
    env = {**os.environ, **claude_env, "LOOPS_CLAUDE_PERMISSION_MODE": "skip"}
    loops = Path(sys.executable).parent / "loops"
    proc = subprocess.run(
        [str(loops), "run", "SPEC.yaml", "-n", "4", "--agent", "claude", "--max-cost", "0.000001"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert len(mock_anthropic.agent_requests) == 1, proc.stderr[-4000:]
    assert proc.stderr.count("(reported by the agent;") == 1, proc.stderr[-4000:]
    assert "of $0.000001" in proc.stderr, proc.stderr[-4000:]  # a limit under a cent, shown
    # The printed hint works where it is printed, and the next run goes on.
    (hint,) = set(re.findall(r"run `(loops budget [^`]+)`", proc.stderr))
    raised = subprocess.run(
        [str(loops), *hint.split()[1:]],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert raised.returncode == 0 and "raised the loop budget" in raised.stdout, raised.stderr
    again = subprocess.run(
        [str(loops), "run", "SPEC.yaml", "-n", "1", "--agent", "claude"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "is no longer spent: released" in again.stderr, again.stderr[-4000:]
    assert len(mock_anthropic.agent_requests) == 2, again.stderr[-4000:]
