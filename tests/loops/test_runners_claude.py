"""The `claude` runner against a fake `claude` executable (tests/fakes/fake_claude.py)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events import ConfigError, FailureKind, IterationOutcome
from events.secrets import MASK
from infra.settings import Settings
from loops.runners import AgentRequest, AgentResult, make_runner
from loops.runners.claude import ClaudeRunner, StreamParser
from loops.runners.outcome import outcome_of
from tests.conftest import wait_until
from tests.loops.test_runners_command import pid_alive

FAKE = Path(__file__).resolve().parent.parent / "fakes" / "fake_claude.py"
KEY = "sk-ant-api03-" + "z" * 40


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point LOOPS_CLAUDE_BIN at the fake; returns the file its runs are recorded in."""
    record = tmp_path / "argv.jsonl"
    monkeypatch.setenv(
        "LOOPS_CLAUDE_BIN", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))}"
    )
    monkeypatch.setenv("FAKE_CLAUDE_RECORD", str(record))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    # The fake's knobs reach it as the operator's passthrough (the agent's environment
    # is an allow-list).
    monkeypatch.setenv("LOOPS_SANDBOX_ENV", "FAKE_CLAUDE_*")
    return record


def runs(record: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def req(tmp_path: Path, **kw: object) -> AgentRequest:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "prompt": "Write hello.txt",
        "worktree": wt,
        "loop": "l",
        "task_id": "T-1",
        "iteration": 1,
        "timeout_s": 10.0,
    }
    fields.update(kw)
    return AgentRequest(**fields)  # type: ignore[arg-type]


def run(
    tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch, **kw: object
) -> AgentResult:
    monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", scenario)
    return make_runner("claude", model="claude-x", settings=Settings.from_env()).run(
        req(tmp_path, **kw)
    )


def test_the_fake_is_an_executable() -> None:
    assert FAKE.stat().st_mode & stat.S_IXUSR
    assert FAKE.read_text().startswith("#!/usr/bin/env python3")


def test_success_parses_the_stream(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(tmp_path, "success", monkeypatch)
    assert result.failure is None, result.failure_detail
    assert result.reply == "Done.\n<promise>file written</promise>"
    assert outcome_of(result).kind is IterationOutcome.CLAIMED
    assert result.session_id and len(result.session_id) == 36
    assert result.commands == [
        f"Write: {tmp_path / 'wt' / 'hello.txt'}",
        "Bash: env | grep ANTHROPIC",
    ]
    assert result.tokens.input_tokens == 300 and result.tokens.output_tokens == 60
    assert result.tokens.cache_read_tokens == 11 and result.tokens.cache_write_tokens == 7
    assert result.cost_usd == pytest.approx(0.0421)
    assert result.permission_denials == 0
    assert (tmp_path / "wt" / "hello.txt").read_text() == "hi\n"
    # The key the agent printed never reaches the transcript.
    assert KEY not in result.transcript and MASK in result.transcript
    assert '"type": "result"' in result.transcript

    (call,) = runs(fake)
    argv = call["argv"]
    assert isinstance(argv, list)
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--model") + 1] == "claude-x"
    assert "--resume" not in argv and "--continue" not in argv and "-c" not in argv
    assert call["stdin"] == "Write hello.txt"
    assert Path(str(call["cwd"])).resolve() == (tmp_path / "wt").resolve()


def test_resumes_its_own_session_by_id_never_continue(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(tmp_path, "success", monkeypatch)
    second = run(tmp_path, "success", monkeypatch, session_id=first.session_id, model="opus")
    assert second.session_id == first.session_id
    argv = runs(fake)[1]["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--resume") + 1] == first.session_id
    assert argv[argv.index("--model") + 1] == "opus"  # the request's model wins
    assert all("--continue" not in r["argv"] for r in runs(fake))  # type: ignore[operator]


def test_unknown_session_starts_afresh(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(tmp_path, "resume_unknown", monkeypatch, session_id="gone-1234")
    assert result.failure is None and result.session_id != "gone-1234"
    first, second = (r["argv"] for r in runs(fake))
    assert "--resume" in first and "--resume" not in second  # type: ignore[operator]


def test_permission_modes(tmp_path: Path) -> None:
    request = req(tmp_path)
    skip = ClaudeRunner(skip_permissions=True, binary="claude").command(request)
    assert "--dangerously-skip-permissions" in skip and "--permission-mode" not in skip
    plan = ClaudeRunner(permission_mode="bypassPermissions", binary="claude").command(request)
    assert plan[plan.index("--permission-mode") + 1] == "bypassPermissions"


def test_permission_mode_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = req(tmp_path)
    monkeypatch.setenv("LOOPS_CLAUDE_PERMISSION_MODE", "skip")
    monkeypatch.setenv("LOOPS_CLAUDE_ARGS", "--allowedTools 'Bash(pytest *)'")
    runner = make_runner("claude", settings=Settings.from_env())  # the environment's
    assert isinstance(runner, ClaudeRunner)
    argv = runner.command(request)
    assert "--dangerously-skip-permissions" in argv
    assert argv[-2:] == ["--allowedTools", "Bash(pytest *)"]
    settings = Settings.from_env({"LOOPS_CLAUDE_PERMISSION_MODE": "bypassPermissions"})
    argv = ClaudeRunner(binary="claude", settings=settings).command(request)
    assert argv[argv.index("--permission-mode") + 1] == "bypassPermissions"
    # An explicit mode beats the setting; the runner itself reads no environment.
    argv = ClaudeRunner(binary="claude", permission_mode="plan", settings=settings).command(request)
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    assert "--dangerously-skip-permissions" not in ClaudeRunner(binary="claude").command(request)


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOOPS_CLAUDE_PERMISSION_MODE", "yolo"), ("LOOPS_CLAUDE_BIN", "claude 'unclosed")],
)
def test_bad_claude_settings_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        make_runner("claude", settings=Settings.from_env())
    assert name.split("_")[-1].lower() in str(err.value).lower() or name in str(err.value)
    assert "\n" not in str(err.value)


def test_usage_limit_with_reset(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLAUDE_RESET", "1893456000")
    result = run(tmp_path, "usage_limit", monkeypatch)
    assert result.failure is FailureKind.USAGE_LIMIT
    assert result.retry_at == datetime.fromtimestamp(1893456000, UTC)


def test_usage_banner_with_clock_time(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(tmp_path, "usage_banner", monkeypatch)
    assert result.failure is FailureKind.USAGE_LIMIT
    assert result.retry_at is not None and result.retry_at.astimezone(UTC).hour == 15


def test_outage(tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, "outage", monkeypatch)
    assert result.failure is FailureKind.OUTAGE
    assert "529" in (result.failure_detail or "")


def test_crash(tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, "crash", monkeypatch)
    assert result.failure is FailureKind.AGENT_ERROR and result.exit_code == 1
    assert "TypeError" in (result.failure_detail or "")


def test_empty_reply(tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, "empty", monkeypatch)
    assert result.failure is FailureKind.EMPTY_REPLY
    assert result.commands  # it did work, but said nothing


def test_permission_denials_are_counted(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(tmp_path, "denied", monkeypatch).permission_denials == 2


def test_hang_times_out_and_kills_the_process_group(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_CLAUDE_CHILD_PID", str(pid_file))
    result = run(tmp_path, "hang", monkeypatch, timeout_s=1.5)
    assert result.failure is FailureKind.TIMEOUT
    assert result.session_id  # known from the init line before it hung
    child = int(wait_until(lambda: pid_file.exists() and pid_file.read_text()))
    wait_until(lambda: not pid_alive(child), timeout=5)


def test_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPS_CLAUDE_BIN", str(tmp_path / "no-claude"))
    result = make_runner("claude", settings=Settings.from_env()).run(req(tmp_path))
    assert result.failure is FailureKind.AGENT_ERROR
    assert "LOOPS_CLAUDE_BIN" in (result.failure_detail or "")


def test_parser_survives_torn_and_foreign_lines() -> None:
    parser = StreamParser()
    for line in [
        "not json at all",
        '{"type":"assistant","message":{"content":[{"type":"text","text":"partial',
        '{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","resetsAt":1}}',
        '{"type":"system","subtype":"init","session_id":"s-1"}',
        "[1, 2]",
        '{"type":"result","result":"ok","session_id":"s-1","is_error":false}',
    ]:
        parser.feed(line)
    assert parser.session_id == "s-1" and parser.reply == "ok" and not parser.rate_limited


def test_env_passes_through(tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI inherits the environment (ANTHROPIC_BASE_URL, CLAUDE_CONFIG_DIR, ...)."""
    monkeypatch.setenv("FAKE_CLAUDE_REPLY", "PASSED")
    result = run(tmp_path, "success", monkeypatch, env={"EXTRA_FOR_AGENT": "1"})
    assert result.reply == "PASSED"
    assert os.environ.get("EXTRA_FOR_AGENT") is None


def _parse(*events: dict[str, object]) -> StreamParser:
    parser = StreamParser()
    for event in events:
        parser.feed(json.dumps(event) + "\n")
    return parser


NOW = datetime(2026, 1, 7, 9, 0, tzinfo=UTC)


def test_a_limit_hit_and_retried_does_not_fail_a_finished_run() -> None:
    parser = _parse(
        {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 1}},
        {"type": "assistant", "error": "rate_limit", "message": {"content": []}},
        {"type": "result", "is_error": False, "result": "<promise>done</promise>"},
    )
    assert parser.failure(0, "", NOW) is None


def test_old_style_limit_result_takes_the_reset_from_the_event() -> None:
    parser = _parse(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {"status": "rejected", "resetsAt": 1767780000000},
        },
        {"type": "result", "is_error": True, "result": "Claude AI usage limit reached"},
    )
    found = parser.failure(1, "", NOW)
    assert found is not None and found.kind is FailureKind.USAGE_LIMIT
    assert found.retry_at == datetime.fromtimestamp(1767780000, UTC)


def test_error_results_are_typed() -> None:
    max_turns = _parse({"type": "result", "is_error": True, "subtype": "error_max_turns"})
    found = max_turns.failure(1, "", NOW)
    assert found is not None and found.kind is FailureKind.AGENT_ERROR
    assert "error_max_turns" in found.detail
    conn = _parse({"type": "result", "is_error": True, "result": "API Error: Connection error."})
    found = conn.failure(1, "", NOW)
    assert found is not None and found.kind is FailureKind.OUTAGE
    no_result = _parse({"type": "system", "subtype": "init", "session_id": "s"})
    found = no_result.failure(0, "", NOW)
    assert found is not None and found.kind is FailureKind.EMPTY_REPLY


def test_usage_is_summed_per_message_without_a_result() -> None:
    usage = {"input_tokens": 10, "output_tokens": 2}
    parser = _parse(
        {"type": "assistant", "message": {"id": "m1", "content": [], "usage": usage}},
        {"type": "assistant", "message": {"id": "m1", "content": [], "usage": usage}},
        {"type": "assistant", "message": {"id": "m2", "content": [], "usage": usage}},
    )
    assert parser.usage.input_tokens == 20 and parser.usage.output_tokens == 4
