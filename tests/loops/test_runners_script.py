"""`script:FILE`: deterministic replay of recorded steps."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events import ConfigError, FailureKind
from loops.runners import AgentRequest, make_runner
from loops.runners.script import ScriptRunner

SCRIPT = """
default:
  - reply: "nothing for this task <promise>ok</promise>"
tasks:
  T-1:
    - reply: "Reading the code first."
    - write:
        hello.py: "print('hello')\\n"
        pkg/mod.py: "X = 1\\n"
      append:
        NOTES.md: "- added hello.py\\n"
      run:
        - python3 hello.py > out.txt
      reply: "<promise>hello works</promise>"
      tokens: {input: 100, output: 20}
      cost_usd: 0.5
    - replace:
        - {path: pkg/mod.py, old: "X = 1", new: "X = 2"}
      delete: hello.py
      reply: "edited"
"""


def write_script(tmp_path: Path, text: str = SCRIPT) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def req(worktree: Path, step: int, task: str = "T-1", **kw: object) -> AgentRequest:
    fields: dict[str, object] = {
        "prompt": "p",
        "worktree": worktree,
        "loop": "l",
        "task_id": task,
        "iteration": 100 + step,
        "task_iteration": step,
        "timeout_s": 5.0,
    }
    fields.update(kw)
    return AgentRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "wt"
    wt.mkdir()
    return wt


def test_replays_steps_by_task_iteration(tmp_path: Path, worktree: Path) -> None:
    runner = make_runner(f"script:{write_script(tmp_path)}")
    first = runner.run(req(worktree, 1))
    assert first.reply == "Reading the code first." and first.failure is None
    assert first.session_id == "script-l-T-1"

    second = runner.run(req(worktree, 2))
    assert second.reply == "<promise>hello works</promise>"
    assert (worktree / "out.txt").read_text() == "hello\n"
    assert (worktree / "NOTES.md").read_text() == "- added hello.py\n"
    assert second.commands == ["python3 hello.py > out.txt"]
    assert second.tokens.input_tokens == 100 and second.cost_usd == 0.5
    assert "write hello.py" in second.transcript

    third = runner.run(req(worktree, 3))
    assert third.reply == "edited"
    assert (worktree / "pkg/mod.py").read_text() == "X = 2\n"
    assert not (worktree / "hello.py").exists()

    # Past the end, the last step repeats; its replace no longer applies.
    fourth = runner.run(req(worktree, 4))
    assert fourth.failure is FailureKind.AGENT_ERROR
    assert "not found in pkg/mod.py" in (fourth.failure_detail or "")

    other = runner.run(req(worktree, 1, task="T-9"))
    assert other.reply.endswith("<promise>ok</promise>")


def test_same_requests_same_steps_in_a_fresh_runner(tmp_path: Path, worktree: Path) -> None:
    """A restarted worker (a new runner) replays the same step for the same request."""
    path = write_script(tmp_path)
    a = ScriptRunner(path).run(req(worktree, 1)).reply
    b = ScriptRunner(path).run(req(worktree, 1)).reply
    assert a == b == "Reading the code first."
    without_task_iteration = req(worktree, 1, task_iteration=None, iteration=2)
    assert ScriptRunner(path).run(without_task_iteration).reply.startswith("<promise>")


def test_failures(tmp_path: Path, worktree: Path) -> None:
    path = write_script(
        tmp_path,
        """
- fail: crash
- fail: empty
- fail: timeout
- fail: outage
- fail: usage_limit
  retry_after: 60
- sleep: 0.05
  reply: slow but healthy
""",
    )
    runner = ScriptRunner(path)
    kinds = [runner.run(req(worktree, n)).failure for n in (1, 2, 3)]
    assert kinds == [FailureKind.AGENT_ERROR, FailureKind.EMPTY_REPLY, FailureKind.TIMEOUT]

    # The worker does not count outage or usage-limit runs: task_iteration stays at 4.
    outage = runner.run(req(worktree, 4))
    assert outage.failure is FailureKind.OUTAGE
    before = datetime.now(UTC)
    limit = ScriptRunner(path).run(req(worktree, 4))  # survives a restart
    assert limit.failure is FailureKind.USAGE_LIMIT
    assert limit.retry_at is not None
    assert before + timedelta(seconds=59) <= limit.retry_at <= before + timedelta(seconds=62)
    assert "usage limit reached" in limit.reply
    healthy = ScriptRunner(path).run(req(worktree, 4))
    assert healthy.failure is None and healthy.reply == "slow but healthy"
    assert healthy.duration_s >= 0.05
    # The same request again keeps giving the same (last) step.
    assert ScriptRunner(path).run(req(worktree, 4)).reply == "slow but healthy"


def test_sleep_past_the_timeout_is_a_timeout(tmp_path: Path, worktree: Path) -> None:
    runner = ScriptRunner(write_script(tmp_path, "- sleep: 30\n  reply: never\n"))
    result = runner.run(req(worktree, 1, timeout_s=0.2))
    assert result.failure is FailureKind.TIMEOUT and result.duration_s < 5


def test_a_hanging_command_is_a_timeout(tmp_path: Path, worktree: Path) -> None:
    runner = ScriptRunner(write_script(tmp_path, "- run: sleep 30\n  reply: never\n"))
    result = runner.run(req(worktree, 1, timeout_s=0.5))
    assert result.failure is FailureKind.TIMEOUT and result.commands == ["sleep 30"]


def test_state_lives_in_the_git_dir_of_a_worktree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    path = write_script(tmp_path, "- fail: usage_limit\n- reply: after\n")
    ScriptRunner(path).run(req(repo, 1))
    assert (repo / ".git" / "loops-script-state.json").exists()
    assert ScriptRunner(path).run(req(repo, 1)).reply == "after"


def test_paths_are_confined_to_the_worktree(tmp_path: Path, worktree: Path) -> None:
    runner = ScriptRunner(write_script(tmp_path, "- write: {'../escape.txt': x}\n"))
    result = runner.run(req(worktree, 1))
    assert result.failure is FailureKind.AGENT_ERROR
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- fail: meltdown\n", "0.fail"),
        ("- reply: x\n  colour: red\n", "0.colour"),
        ("tasks: {T: [{sleep: -1}]}\n", "tasks.T.0.sleep"),
        ("default: []\n", "no steps"),
        ("- reply: [unclosed\n", "not valid YAML (line"),
    ],
)
def test_bad_scripts_are_one_line_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_runner(f"script:{write_script(tmp_path, text)}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_script(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        make_runner(f"script:{tmp_path / 'nope.yaml'}")
