"""`command:CMD` and the process seam: DESIGN.md's contract, timeouts, secrets."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from events import ConfigError, FailureKind
from events.secrets import MASK, redact
from infra.settings import Settings
from loops.runners import AgentRequest, AgentRunner, make_runner
from loops.runners.command import CommandRunner
from tests.conftest import wait_until


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def request(tmp_path: Path, **kw: object) -> AgentRequest:
    worktree = tmp_path / "wt"
    worktree.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "prompt": "Do the task.\nLine two.",
        "worktree": worktree,
        "loop": "loop-1",
        "task_id": "T-1",
        "iteration": 3,
        "timeout_s": 10.0,
    }
    fields.update(kw)
    return AgentRequest(**fields)  # type: ignore[arg-type]


def test_make_runner_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-for-make-runner")
    assert isinstance(make_runner("command:echo hi"), CommandRunner)
    assert make_runner("command: echo hi").name == "command:echo hi"
    runner = make_runner("claude", settings=Settings.from_env())
    assert isinstance(runner, AgentRunner) and runner.name == "claude"
    assert make_runner("anthropic", settings=Settings.from_env()).name == "anthropic"
    script = tmp_path / "s.yaml"
    script.write_text("- reply: hi\n")
    assert make_runner("script:s.yaml", base_dir=tmp_path).name == f"script:{script}"


@pytest.mark.parametrize("spec", ["codex", "command:", "script:", "claude:opus", "", "gpt"])
def test_make_runner_rejects_unknown_specs_in_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_runner(spec)
    assert "\n" not in str(err.value)


def test_command_contract(tmp_path: Path) -> None:
    """stdin, $LOOPS_PROMPT_FILE, LOOPS_* env, cwd = worktree, stdout = reply."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "stdin = sys.stdin.read()\n"
        "path = os.environ['LOOPS_PROMPT_FILE']\n"
        "with open(path) as fh: from_file = fh.read()\n"
        "keys = ['LOOPS_LOOP', 'LOOPS_TASK_ID', 'LOOPS_ITERATION', 'LOOPS_WORKTREE', 'EXTRA']\n"
        "json.dump({'stdin': stdin, 'file': from_file, 'cwd': os.getcwd(),\n"
        "  'env': {k: os.environ.get(k) for k in keys}, 'path': path}, open('seen.json', 'w'))\n"
        "print('working... <promise>done</promise>')\n"
    )
    runner = make_runner(f"command:{sys.executable} {probe}")
    req = request(tmp_path, env={"EXTRA": "x"})
    result = runner.run(req)
    assert result.failure is None, result.failure_detail
    assert result.reply.strip() == "working... <promise>done</promise>"
    assert result.exit_code == 0
    seen = json.loads((req.worktree / "seen.json").read_text())
    assert seen["stdin"] == req.prompt and seen["file"] == req.prompt
    assert Path(seen["cwd"]).resolve() == req.worktree.resolve()
    assert seen["env"] == {
        "LOOPS_LOOP": "loop-1",
        "LOOPS_TASK_ID": "T-1",
        "LOOPS_ITERATION": "3",
        "LOOPS_WORKTREE": str(req.worktree),
        "EXTRA": "x",
    }
    # The prompt file lives outside the worktree and is gone afterwards.
    assert not Path(seen["path"]).exists()
    assert not Path(seen["path"]).resolve().is_relative_to(req.worktree.resolve())


def test_command_may_use_the_prompt_file_in_its_command_line(tmp_path: Path) -> None:
    result = make_runner('command:cat "$LOOPS_PROMPT_FILE"').run(request(tmp_path))
    assert result.reply == "Do the task.\nLine two."


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A child the agent started in the background dies with it."""
    req = request(tmp_path, timeout_s=1.0)
    pidfile = req.worktree / "child.pid"
    cmd = f"command:sleep 60 & echo $! > {pidfile}; echo started; sleep 60"
    result = make_runner(cmd).run(req)
    assert result.failure is FailureKind.TIMEOUT
    assert result.exit_code is None
    assert "timeout" in (result.failure_detail or "")
    child = int(pidfile.read_text())
    wait_until(lambda: not pid_alive(child), timeout=5)
    assert result.duration_s < 8


def test_stragglers_do_not_outlive_a_finished_run(tmp_path: Path) -> None:
    req = request(tmp_path)
    pidfile = req.worktree / "child.pid"
    result = make_runner(f"command:sleep 60 & echo $! > {pidfile}; echo bye").run(req)
    assert result.reply.strip() == "bye" and result.failure is None
    child = int(pidfile.read_text())
    wait_until(lambda: not pid_alive(child), timeout=5)


def test_crash_empty_and_usage_limit(tmp_path: Path) -> None:
    crash = make_runner("command:echo 'Traceback: boom' >&2; exit 3").run(request(tmp_path))
    assert crash.failure is FailureKind.AGENT_ERROR and crash.exit_code == 3
    assert "boom" in (crash.failure_detail or "")
    assert "boom" in crash.transcript

    empty = make_runner("command:true").run(request(tmp_path))
    assert empty.failure is FailureKind.EMPTY_REPLY

    limit = make_runner("command:echo 'Claude AI usage limit reached|1767779100'; exit 1").run(
        request(tmp_path)
    )
    assert limit.failure is FailureKind.USAGE_LIMIT
    assert limit.retry_at is not None and int(limit.retry_at.timestamp()) == 1767779100

    outage = make_runner("command:echo 'API Error: 529 overloaded' >&2; exit 1").run(
        request(tmp_path)
    )
    assert outage.failure is FailureKind.OUTAGE


def test_missing_program_is_an_agent_error(tmp_path: Path) -> None:
    result = CommandRunner("x", shell=str(tmp_path / "no-such-shell")).run(request(tmp_path))
    assert result.failure is FailureKind.AGENT_ERROR
    assert "could not start" in (result.failure_detail or "")


def test_secrets_never_reach_reply_or_transcript(tmp_path: Path) -> None:
    key = "sk-ant-api03-" + "A" * 40
    req = request(tmp_path, env={"ANTHROPIC_API_KEY": key, "MY_SERVICE_TOKEN": "hunter2hunter2"})
    result = make_runner(
        'command:echo "key=$ANTHROPIC_API_KEY tok=$MY_SERVICE_TOKEN"; echo "$ANTHROPIC_API_KEY" >&2'
    ).run(req)
    for text in (result.reply, result.transcript):
        assert key not in text and "hunter2hunter2" not in text
        assert MASK in text


def test_a_key_on_the_command_line_stays_out_of_the_name(tmp_path: Path) -> None:
    runner = make_runner("command:aider --api-key sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
    assert runner.name == f"command:aider --api-key {MASK}"


def test_redact_known_token_shapes() -> None:
    text = (
        "Authorization: Bearer abcdefghijklmnop1234\n"
        "ghp_" + "a" * 36 + "\nx-api-key: sk-ant-whatever-123456789\nplain words stay"
    )
    out = redact(text, env={})
    assert "abcdefghijklmnop1234" not in out and "ghp_" not in out
    assert "sk-ant-whatever" not in out and "plain words stay" in out
    assert redact("PATH stays", env={"PATH": "/usr/bin:/bin"}) == "PATH stays"


def test_env_of_the_test_process_is_not_leaked_into_results(tmp_path: Path) -> None:
    os.environ["LOOPS_TEST_SECRET_KEY"] = "very-secret-value-42"
    try:
        result = make_runner('command:echo "$LOOPS_TEST_SECRET_KEY"').run(request(tmp_path))
    finally:
        del os.environ["LOOPS_TEST_SECRET_KEY"]
    assert "very-secret-value-42" not in result.reply


def test_capped_output_keeps_head_and_tail_and_makes_up_no_marker() -> None:
    from loops.runners.process import CappedText

    capped = CappedText(head=10, tail=11)
    for line in ["0123456789abc\n", "TEST PASSED\n", "end\n"]:
        capped.add(line)
    # the tail window starts inside "TEST PASSED": "PASSED\nend\n"
    assert "".join(capped.tail) == "PASSED\nend\n"
    text = capped.text()
    assert text == "0123456789\n[... 16 bytes cut ...]\nend\n"
    assert "PASSED" not in text  # the tail's cut first line is dropped, not half kept
    whole = CappedText(head=100, tail=100)
    whole.add("short\n")
    assert whole.text() == "short\n"
