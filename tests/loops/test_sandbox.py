"""The agent's sandbox (loops/sandbox.py): real agent executables, real git, real bwrap.

Each agent looks for what it could reach the way a hostile one would (listing and
opening the operator's checkout, the state directory, other loops' work trees; its
environment; the network; git refs) and reports what it saw in a file of its work
tree; the test reads the report. Tests that need bwrap fail under CI=true when it is
missing, and skip otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from events import FailureKind, IterationOutcome
from infra.git import git
from loops.runners import AgentRequest, AgentResult
from loops.runners.claude import ClaudeRunner
from loops.runners.command import CommandRunner
from loops.runners.outcome import parse_outcome
from loops.sandbox import (
    SandboxConfig,
    SandboxMode,
    SandboxPolicy,
    SandboxUnavailable,
    find_bwrap,
    sandbox_status,
)
from loops.workspace import Workspace
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = shlex.quote(sys.executable)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Workspace, Workspace]:
    """An operator's repo with secrets in its checkout and state dir, and two loops."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("print('hi')\n")
    (repo / "README.md").write_text("readme\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    (repo / "secret.txt").write_text("operator's uncommitted notes\n")
    state = repo / ".loops"
    (state / "state").mkdir(parents=True)
    (state / "redis.url").write_text("redis://:hunter2hunter2@127.0.0.1:6379/0\n")
    (state / "dashboard.token").write_text("dashboard-token-123456\n")
    (state / "state" / "a.worker.json").write_text("{}\n")
    a = Workspace(repo, "a", "main")
    b = Workspace(repo, "b", "main")
    a.ensure()
    b.ensure()
    (b.path / "b-work.txt").write_text("other loop's work\n")
    return repo, a, b


def agent(tmp_path: Path, body: str) -> str:
    """A command line running `body` as a Python agent (kept outside the repo)."""
    path = tmp_path / f"agent-{uuid.uuid4().hex[:6]}.py"
    path.write_text(
        "import json, os, socket, subprocess, sys\nfrom pathlib import Path\n"
        "report = {}\n"
        "def attempt(name, fn):\n"
        "    try:\n"
        "        report[name] = ['ok', fn()]\n"
        "    except Exception as exc:\n"
        "        report[name] = ['error', f'{type(exc).__name__}: {exc}']\n"
        f"{body}\n"
        "Path('report.json').write_text(json.dumps(report))\n"
        "print('done <promise>probed</promise>')\n"
    )
    return f"{PY} {shlex.quote(str(path))}"


def run(
    ws: Workspace, command: str, config: SandboxConfig | None = None, **kw: object
) -> tuple[AgentResult, dict[str, list[object]]]:
    request = AgentRequest(
        prompt="probe",
        worktree=ws.path,
        loop=ws.loop,
        task_id="T-1",
        iteration=1,
        timeout_s=60,
        sandbox=ws.sandbox_policy(config),
        **kw,  # type: ignore[arg-type]
    )
    result = CommandRunner(command).run(request)
    report = ws.path / "report.json"
    return result, json.loads(report.read_text()) if report.exists() else {}


def ok(report: dict[str, list[object]], name: str) -> bool:
    return report[name][0] == "ok"


def test_agent_sees_nothing_of_the_checkout_the_state_or_other_loops(
    bwrap: str, project: tuple[Path, Workspace, Workspace], tmp_path: Path
) -> None:
    repo, a, b = project
    targets = {
        "readme": repo / "README.md",
        "secret": repo / "secret.txt",
        "redis_url": repo / ".loops" / "redis.url",
        "token": repo / ".loops" / "dashboard.token",
        "state": repo / ".loops" / "state" / "a.worker.json",
        "other_loop": b.path / "b-work.txt",
        "other_git": b.git_dir / "HEAD",
        "operator_git_config": repo / ".git" / "config",
        "operator_head": repo / ".git" / "HEAD",
    }
    body = (
        f"targets = {json.dumps({k: str(v) for k, v in targets.items()})}\n"
        "for name, path in targets.items():\n"
        "    attempt(name, lambda path=path: Path(path).read_text())\n"
        # a hostile search: every parent of the cwd, walked for anything secret-looking
        "found = []\n"
        "for parent in Path.cwd().parents:\n"
        "    for dirpath, dirs, files in os.walk(parent):\n"
        "        if dirpath.startswith(('/proc', '/sys', '/dev', '/usr', '/etc')):\n"
        "            dirs[:] = []\n"
        "            continue\n"
        "        found += [os.path.join(dirpath, f) for f in files\n"
        "                  if f in ('redis.url', 'dashboard.token', 'secret.txt', 'b-work.txt')]\n"
        "    if parent == Path(os.environ['LOOPS_WORKTREE']).parents[3]: break\n"
        "report['found'] = ['ok', found]\n"
        f"attempt('listing', lambda: sorted(os.listdir({str(repo)!r})))\n"
        "attempt('own', lambda: Path('app.py').read_text())\n"
        "attempt('git_status', lambda: subprocess.run(['git', 'status', '--porcelain'],"
        " capture_output=True, text=True, check=True).stdout)\n"
        "attempt('git_log', lambda: subprocess.run(['git', 'log', '--oneline'],"
        " capture_output=True, text=True, check=True).stdout)\n"
    )
    result, report = run(a, agent(tmp_path, body))
    assert result.failure is None, result.failure_detail
    for name in targets:
        assert not ok(report, name), (name, report[name])
    assert report["found"] == ["ok", []]
    assert set(report["listing"][1]) <= {".git", ".loops"}  # type: ignore[arg-type]
    assert report["own"] == ["ok", "print('hi')\n"]
    assert ok(report, "git_status") and "init" in str(report["git_log"][1])
    # Unsandboxed, the same agent sees them all: the test would catch a leak.
    _, open_report = run(a, agent(tmp_path, body), SandboxConfig(mode=SandboxMode.OFF))
    assert ok(open_report, "redis_url") and ok(open_report, "other_loop")


def test_agent_writes_its_workspace_and_tmpdir_only(
    bwrap: str,
    project: tuple[Path, Workspace, Workspace],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, a, _ = project
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".git-credentials").write_text("https://u:ghp_x@github.com\n")
    (home / ".profile").write_text("# profile\n")
    monkeypatch.setenv("HOME", str(home))
    stray = Path("/tmp") / f"loops-sandbox-probe-{uuid.uuid4().hex}"
    extra = tmp_path / "cache"
    extra.mkdir()
    monkeypatch.setenv("LOOPS_SANDBOX_WRITABLE", str(extra))
    body = (
        "attempt('workspace', lambda: Path('new.txt').write_text('x'))\n"
        "attempt('tmpdir', lambda: Path(os.environ['TMPDIR'], 't').write_text('x'))\n"
        "attempt('prompt', lambda: Path(os.environ['LOOPS_PROMPT_FILE']).read_text())\n"
        f"attempt('home', lambda: Path({str(home)!r}, '.config', 'x').write_text('x'))\n"
        f"attempt('tmp', lambda: Path({str(stray)!r}).write_text('x'))\n"
        f"attempt('repo', lambda: Path({str(repo)!r}, 'x.txt').write_text('x'))\n"
        f"attempt('state', lambda: Path({str(repo)!r}, '.loops', 'x').write_text('x'))\n"
        f"attempt('extra', lambda: Path({str(extra)!r}, 'x').write_text('x'))\n"
        f"attempt('ssh_key', lambda: Path({str(home)!r}, '.ssh', 'id_ed25519').read_text())\n"
        f"attempt('git_credentials', lambda: Path({str(home)!r}, '.git-credentials').read_text())\n"
        f"attempt('profile', lambda: Path({str(home)!r}, '.profile').read_text())\n"
    )
    result, report = run(a, agent(tmp_path, body))
    assert result.failure is None, result.failure_detail
    assert ok(report, "workspace") and ok(report, "tmpdir") and ok(report, "extra")
    assert report["prompt"] == ["ok", "probe"]
    assert report["profile"] == ["ok", "# profile\n"]  # the rest of HOME reads as it is
    assert "ghp_x" not in str(report["git_credentials"])  # credentials are hidden
    for name in ("home", "tmp", "repo", "state", "ssh_key"):
        assert not ok(report, name), (name, report[name])
    assert not stray.exists() and not (home / ".config" / "x").exists()
    assert not (repo / "x.txt").exists()
    assert list((repo / ".loops" / "tmp" / "a").iterdir()) == []  # TMPDIR removed


def test_agent_git_cannot_move_any_ref(
    bwrap: str, project: tuple[Path, Workspace, Workspace], tmp_path: Path
) -> None:
    repo, a, _ = project
    main = git(repo, "rev-parse", "main")
    private = git(repo, "--git-dir", str(a.git_dir), "for-each-ref")
    commands = [
        "git -c user.name=a -c user.email=a@b commit -qam evil",
        "git push -q . HEAD:main",
        f"git push -q {shlex.quote(str(repo))} HEAD:main",
        "git update-ref refs/heads/main HEAD",
        "git branch -f main HEAD",
        "git push -q . HEAD:refs/heads/loop/b",
    ]
    body = (
        "Path('app.py').write_text('evil\\n')\n"
        f"for i, cmd in enumerate({commands!r}):\n"
        "    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)\n"
        "    report[cmd] = ['ok' if p.returncode == 0 else 'error', p.stderr[-300:]]\n"
    )
    result, report = run(a, agent(tmp_path, body))
    assert result.failure is None, result.failure_detail
    for cmd in commands:
        assert not ok(report, cmd), (cmd, report[cmd])
    assert git(repo, "rev-parse", "main") == main
    assert git(repo, "--git-dir", str(a.git_dir), "for-each-ref") == private
    # The harness still commits the agent's edit, on the loop branch only.
    done = a.commit_iteration("a: T-1 iteration 1")
    assert "app.py" in done.changed_files
    assert git(repo, "rev-parse", "loop/a") == done.commit
    assert git(repo, "rev-parse", "main") == main


def test_network_off_reaches_nothing(
    bwrap: str, project: tuple[Path, Workspace, Workspace], tmp_path: Path
) -> None:
    _, a, _ = project
    body = "attempt('redis', lambda: socket.create_connection(('127.0.0.1', 6379), 2).close())\n"
    _, report = run(a, agent(tmp_path, body), SandboxConfig(network=False))
    assert not ok(report, "redis")
    try:
        socket.create_connection(("127.0.0.1", 6379), 2).close()
    except OSError:
        return  # no server to reach from the host either: the contrast is moot
    _, report = run(a, agent(tmp_path, body), SandboxConfig(network=True))
    assert ok(report, "redis"), report


def test_agent_environment_is_an_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "REDIS_URL": "redis://:pw-pw-pw-pw@127.0.0.1:6379/0",
        "LOOPS_WEBHOOK_SECRET": "webhook-secret-value",
        "LOOPS_DASHBOARD_TOKEN": "dashboard-token-value",
        "GITHUB_TOKEN": "ghp_" + "a" * 36,
        "PGPASSWORD": "pg-password-value",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value-123",
        "SOME_RANDOM_SETTING": "not-listed",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-" + "k" * 30)
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    monkeypatch.setenv("LOOPS_SANDBOX_ENV", "MY_TOOL_*, PGPASSWORD")
    wt = tmp_path / "wt"
    wt.mkdir()
    body = (
        "report['env'] = ['ok', dict(os.environ)]\n"
        "attempt('prompt', lambda: Path(os.environ['LOOPS_PROMPT_FILE']).read_text())\n"
    )
    request = AgentRequest(
        prompt="the prompt", worktree=wt, loop="l", task_id="T-1", iteration=4, timeout_s=60
    )
    result = CommandRunner(agent(tmp_path, body)).run(request)
    assert result.failure is None, result.failure_detail
    env = json.loads((wt / "report.json").read_text())["env"][1]
    for name in ("REDIS_URL", "LOOPS_WEBHOOK_SECRET", "LOOPS_DASHBOARD_TOKEN", "GITHUB_TOKEN"):
        assert name not in env, name
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SOME_RANDOM_SETTING" not in env
    assert "LOOPS_SANDBOX_ENV" not in env
    assert env["PGPASSWORD"] == "pg-password-value"  # passed through by the operator
    assert env["MY_TOOL_HOME"] == "/opt/tool"
    assert env["ANTHROPIC_API_KEY"].startswith("sk-ant-")  # the agent's own credentials
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == os.environ["HOME"]
    assert (env["LOOPS_LOOP"], env["LOOPS_TASK_ID"], env["LOOPS_ITERATION"]) == ("l", "T-1", "4")
    assert env["LOOPS_WORKTREE"] == str(wt)
    assert Path(env["LOOPS_PROMPT_FILE"]).parent == Path(env["TMPDIR"])
    assert not Path(env["TMPDIR"]).exists()  # removed after the run


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (sandboxed ones included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def writer(out: Path, marker: str) -> str:
    """A shell line that starts a `setsid` child appending to `out` forever."""
    loop = f"while :; do echo x >> {shlex.quote(str(out))}; sleep 0.05; done # {marker}"
    return f"setsid sh -c {shlex.quote(loop)} > /dev/null 2>&1 < /dev/null &"


def test_setsid_child_dies_with_the_run(
    bwrap: str, project: tuple[Path, Workspace, Workspace]
) -> None:
    _, a, _ = project
    marker = f"loops-setsid-{uuid.uuid4().hex}"
    out = a.path / "writes.log"
    command = f"{writer(out, marker)} while [ ! -s {out} ]; do :; done; echo '<promise>x</promise>'"
    result, _ = run(a, command)
    assert result.failure is None, result.failure_detail
    assert out.stat().st_size > 0  # the child was writing while the run lasted
    wait_until(lambda: not processes_with(marker), timeout=10)
    # Nothing writes any more: every process that could is gone.
    assert not processes_with(marker)


def test_setsid_child_dies_when_the_run_is_cancelled(
    bwrap: str, project: tuple[Path, Workspace, Workspace]
) -> None:
    """A cancelled (or timed-out: the same kill) run takes its setsid child down."""
    _, a, _ = project
    marker = f"loops-setsid-{uuid.uuid4().hex}"
    out = a.path / "writes.log"
    cancel = threading.Event()
    results: list[AgentResult] = []
    thread = threading.Thread(
        target=lambda: results.append(
            run(a, f"{writer(out, marker)} sleep 300 # {marker}", cancel=cancel)[0]
        )
    )
    thread.start()
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, timeout=30)
        assert processes_with(marker)
    finally:
        cancel.set()
        thread.join(30)
    assert results and results[0].failure is FailureKind.AGENT_ERROR
    wait_until(lambda: not processes_with(marker), timeout=10)


def test_setsid_child_dies_with_a_killed_supervisor(
    bwrap: str, project: tuple[Path, Workspace, Workspace]
) -> None:
    repo, a, _ = project
    marker = f"loops-setsid-{uuid.uuid4().hex}"
    out = a.path / "writes.log"
    command = f"{writer(out, marker)} sleep 300 # {marker}"
    supervisor = (
        "import sys\nfrom pathlib import Path\n"
        "from loops.runners import AgentRequest\n"
        "from loops.runners.command import CommandRunner\n"
        "from loops.workspace import Workspace\n"
        f"ws = Workspace(Path({str(repo)!r}), 'a', 'main')\n"
        "ws.ensure()\n"
        "request = AgentRequest(prompt='p', worktree=ws.path, loop='a', task_id='T',"
        " iteration=1, timeout_s=600, sandbox=ws.sandbox_policy())\n"
        f"CommandRunner({command!r}).run(request)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", supervisor],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, timeout=30)
        assert processes_with(marker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_until(lambda: not processes_with(marker), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_unsandboxed_setsid_child_is_swept_after_the_run(
    project: tuple[Path, Workspace, Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the sandbox (off, or no bwrap) the harness still kills what the agent
    left running, by the LOOPS_WORKTREE its processes inherit."""
    monkeypatch.setenv("LOOPS_SANDBOX", "off")
    _, a, _ = project
    marker = f"loops-setsid-{uuid.uuid4().hex}"
    out = a.path / "writes.log"
    command = f"{writer(out, marker)} while [ ! -s {out} ]; do :; done; echo '<promise>x</promise>'"
    try:
        result, _ = run(a, command)
        assert result.failure is None, result.failure_detail
        wait_until(lambda: not processes_with(marker), timeout=10)
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_fifty_megabytes_then_a_promise_keeps_the_promise(tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    wt.mkdir()
    script = tmp_path / "loud.py"
    script.write_text(
        "import sys\nline = 'y' * 1023 + '\\n'\n"
        "for _ in range(50 * 1024):\n    sys.stdout.write(line)\n"
        "print('All done. <promise>loud task done</promise>')\n"
    )
    request = AgentRequest(
        prompt="p", worktree=wt, loop="l", task_id="T", iteration=1, timeout_s=120
    )
    result = CommandRunner(f"{PY} {shlex.quote(str(script))}").run(request)
    assert result.failure is None, result.failure_detail
    assert len(result.reply) < 9 * 1024 * 1024
    assert "bytes cut ...]" in result.reply and result.reply.startswith("yyyy")
    outcome = parse_outcome(result.reply)
    assert outcome.kind is IterationOutcome.CLAIMED and outcome.text == "loud task done"


def test_fifty_megabytes_of_stream_json_keeps_claude_result(tmp_path: Path) -> None:
    fake = tmp_path / "claude.py"
    fake.write_text(
        "import json, sys\nsys.stdin.read()\n"
        "print(json.dumps({'type': 'system', 'subtype': 'init', 'session_id': 's-1'}))\n"
        "block = {'type': 'assistant', 'message': {'id': 'm', 'content': [\n"
        "    {'type': 'text', 'text': 'z' * 1000}]}}\n"
        "line = json.dumps(block) + '\\n'\n"
        "for _ in range(50 * 1024):\n    sys.stdout.write(line)\n"
        "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False,\n"
        "    'result': 'Done. <promise>claude done</promise>', 'session_id': 's-1'}))\n"
    )
    wt = tmp_path / "wt"
    wt.mkdir()
    request = AgentRequest(
        prompt="p", worktree=wt, loop="l", task_id="T", iteration=1, timeout_s=120
    )
    result = ClaudeRunner(binary=f"{PY} {shlex.quote(str(fake))}").run(request)
    assert result.failure is None, result.failure_detail
    assert parse_outcome(result.reply).text == "claude done"
    assert '"type": "result"' in result.transcript  # the tail survives the cap


def test_sandbox_off_warns_once(
    project: tuple[Path, Workspace, Workspace],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import loops.sandbox

    monkeypatch.setattr(loops.sandbox, "_warned", set())
    monkeypatch.setenv("LOOPS_SANDBOX", "off")
    repo, a, _ = project
    status = sandbox_status(SandboxConfig())
    assert status.mode is SandboxMode.OFF and not status.active
    assert status.warning and "sandbox is off" in status.warning and "\n" not in status.warning
    body = (
        f"attempt('redis_url', lambda: Path({str(repo / '.loops' / 'redis.url')!r}).read_text())\n"
    )
    with caplog.at_level(logging.WARNING, logger="loops.sandbox"):
        a.sandbox_policy().check()
        _, report = run(a, agent(tmp_path, body))
        run(a, agent(tmp_path, body))
    assert ok(report, "redis_url")  # off means off
    warnings = [r for r in caplog.records if "sandbox is off" in r.getMessage()]
    assert len(warnings) == 1


def test_required_without_bwrap_refuses_in_one_line(
    project: tuple[Path, Workspace, Workspace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loops.sandbox

    monkeypatch.setattr(loops.sandbox, "_warned", set())
    _, a, _ = project
    bin_dir = tmp_path / "bin"  # a PATH with git and sh but no bwrap
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_bwrap() is None
    marker = a.path / "ran"
    # auto: the run goes ahead, with a warning
    monkeypatch.setenv("LOOPS_SANDBOX", "auto")
    status = sandbox_status()
    assert status.warning and "bwrap (bubblewrap) is not on PATH" in status.warning
    result, _ = run(a, f"echo > {marker}; echo '<promise>x</promise>'")
    assert result.failure is None and marker.exists()
    marker.unlink()
    # required: nothing runs; one line says why and what to do
    monkeypatch.setenv("LOOPS_SANDBOX", "required")
    policy = a.sandbox_policy()
    with pytest.raises(SandboxUnavailable) as err:
        policy.check()
    assert "\n" not in str(err.value) and "bubblewrap" in str(err.value)
    result, _ = run(a, f"echo > {marker}")
    assert result.failure is FailureKind.AGENT_ERROR
    assert result.failure_detail == str(err.value)
    assert not marker.exists()
    # the config says it too
    monkeypatch.delenv("LOOPS_SANDBOX")
    with pytest.raises(SandboxUnavailable):
        a.sandbox_policy(SandboxConfig.model_validate("required")).check()


def test_sandbox_config_forms() -> None:
    assert SandboxConfig.model_validate("off").mode is SandboxMode.OFF
    cfg = SandboxConfig.model_validate({"network": False, "writable": ["~/.cache"]})
    assert cfg.mode is SandboxMode.AUTO and not cfg.network
    with pytest.raises(ValueError, match="writeable"):
        SandboxConfig.model_validate({"writeable": ["x"]})
    policy = SandboxPolicy.build(cfg, base=Path("/p"), environ={"LOOPS_SANDBOX_WRITABLE": "a:/b"})
    assert policy.writable == (Path.home() / ".cache", Path("/p/a"), Path("/b"))


def test_linked_worktree_repo_hides_its_main_checkout_too(bwrap: str, tmp_path: Path) -> None:
    """The operator works in a linked worktree: the main checkout and the shared git dir
    (elsewhere on disk) are hidden as well; the agent's git still works."""
    main = tmp_path / "main"
    main.mkdir()
    git(main, "init", "-q", "-b", "main")
    (main / "app.py").write_text("x = 1\n")
    git(main, "add", "-A")
    git(main, "commit", "-qm", "init")
    (main / "notes.txt").write_text("private notes\n")
    linked = tmp_path / "linked"
    git(main, "worktree", "add", "-q", "-b", "work", str(linked))
    ws = Workspace(linked, "a", "work")
    ws.ensure()
    body = (
        f"attempt('notes', lambda: Path({str(main / 'notes.txt')!r}).read_text())\n"
        f"attempt('config', lambda: Path({str(main / '.git' / 'config')!r}).read_text())\n"
        "attempt('log', lambda: subprocess.run(['git', 'log', '--oneline'],"
        " capture_output=True, text=True, check=True).stdout)\n"
    )
    result, report = run(ws, agent(tmp_path, body))
    assert result.failure is None, result.failure_detail
    assert not ok(report, "notes") and not ok(report, "config")
    assert "init" in str(report["log"][1])


def test_a_loop_with_sandbox_required_does_not_start_without_bwrap(
    project: tuple[Path, Workspace, Workspace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loops up`/`loops run` refuse at the worker's start, before any agent runs."""
    from loops.books import SpecBook
    from loops.spec import parse_spec
    from loops.worker import LoopWorker

    repo, a, _ = project
    spec = (
        'goal: "g"\ntasks:\n  - id: t\n    title: "t"\n    description: "d"\n'
        '    acceptance_criteria:\n      - criterion: "c"\n        check: {type: script, run: "true"}\n'
    )
    book = SpecBook(parse_spec(spec), repo / "SPEC.yaml", repo / ".loops" / "state", 3)
    published: list[object] = []
    worker = LoopWorker(
        book,
        CommandRunner("true"),
        a,
        published.append,
        state_file=tmp_path / "w.json",
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git_bin = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "git").symlink_to(git_bin)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("LOOPS_SANDBOX", "required")
    with pytest.raises(SandboxUnavailable, match=r"bwrap .* not on PATH"):
        worker.started()
    assert published == []


def test_a_listed_path_holding_the_checkout_does_not_show_it(
    bwrap: str, project: tuple[Path, Workspace, Workspace], tmp_path: Path
) -> None:
    # The operator lists a parent of the repository as writable (say, a scratch dir
    # that happens to hold it): the checkout and the state dir stay hidden inside it.
    repo, a, _ = project
    outside = tmp_path / "scratch.txt"
    body = (
        f"attempt('redis_url', lambda: Path({str(repo / '.loops' / 'redis.url')!r}).read_text())\n"
        f"attempt('secret', lambda: Path({str(repo / 'secret.txt')!r}).read_text())\n"
        f"attempt('scratch', lambda: Path({str(outside)!r}).write_text('x'))\n"
    )
    config = SandboxConfig(writable=[str(tmp_path)])
    result, report = run(a, agent(tmp_path, body), config)
    assert result.failure is None, result.failure_detail
    assert ok(report, "scratch"), report["scratch"]
    assert not ok(report, "redis_url"), report["redis_url"]
    assert not ok(report, "secret"), report["secret"]
