"""Attacks on an agent host: iterations run as rq jobs (`loops.jobs.run_iteration`),
each in the host's own clone of the project's remote, by the coordinator's
`QueuedRunner`. The agent (`agents/agent_host.py`) knows the deployment's layout, as
compose's is documented: the remote is the project's own directory (`/repo`, with the
coordinator's `.loops/`), the clones of every loop and project are under
`LOOPS_AGENT_HOME`, and the host has git credentials of its own for the remote.

The first test runs the job in-process (the same function an rq worker calls); the
second in a real `rq worker` (SimpleWorker, as compose's `agents` service), whose
environment and command line hold the Redis password and the signing key."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.git import git
from loops.runners import AgentRequest, AgentResult, make_runner
from loops.runners.queued import AgentQueue, QueuedRunner
from loops.workspace import Workspace
from tests.conftest import require_real_redis
from tests.security.conftest import (
    BIN,
    Findings,
    agent,
    assert_not_on_main,
    make_project,
    require_bwrap,
)

LOOP = "l1"


def sha(text: str) -> str:
    """The agents' fingerprint of a value (`hostile.sha`)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def reports(result: AgentResult) -> dict[str, dict[str, Any]]:
    found = {}
    for line in result.reply.splitlines():
        if line.startswith("HOSTILE-REPORT {"):
            item = json.loads(line.removeprefix("HOSTILE-REPORT "))
            found[item.pop("kind")] = item
    return found


@pytest.fixture
def home() -> Iterator[Path]:
    """The agent host's home directory: short (a unix socket's path goes in it)."""
    path = Path(tempfile.mkdtemp(prefix="ah-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The host's ssh-agent, holding the key it pushes with, where ssh-agent puts its
    socket (`/tmp/ssh-XXXX/agent.N`), named by the harness's `SSH_AUTH_SOCK`; returns
    the socket's directory."""
    where = Path(tempfile.mkdtemp(prefix="ssh-"))
    sock = where / "agent.1"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        key = where / "key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
        )
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, timeout=30)
        key.unlink()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield where
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(where, ignore_errors=True)


class Listener:
    """An agent's socket (a git credential-cache daemon, a gpg-agent): answers anyone
    with the secret, and counts who asked."""

    def __init__(self, path: Path, password: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.asked = 0
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen()
        self.server.settimeout(0.2)
        self.answer = f"protocol=https\nhost=git.example.com\nusername=u\npassword={password}\n"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                self.asked += 1
                conn.sendall(self.answer.encode())

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.server.close()


def agent_host(
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    sockets: tuple[Path, ...] = (),
    origin: bool = False,
) -> dict[str, Any]:
    """The operator's project (the remote, as in compose; with `origin`, a bare remote
    beside it, as with `LOOPS_REMOTE=origin`, the project still at the same path on the
    agent host), the agent host's home with the clones of another loop and another
    project, and the host's git credentials; returns the secrets planted, by where."""
    root = make_project(tmp_path / "p", [])
    remote = root
    if origin:
        remote = tmp_path / "origin.git"
        git(tmp_path, "init", "-q", "--bare", str(remote))
        git(root, "remote", "add", "origin", str(remote))
        git(root, "push", "-q", "origin", "main")
    marks = tmp_path / "marks"
    marks.mkdir()
    agents = tmp_path / "agent-host"
    secrets = {
        "coordinator's .loops/dashboard.token": root / ".loops" / "dashboard.token",
        "coordinator's .loops/redis.url": root / ".loops" / "redis.url",
        "another loop's clone": agents / "0123456789abcdef" / "l2" / "ws" / "worktrees" / "l2" / "wip.py",
        "another project's clone": agents / "fedcba9876543210" / "l1" / "ws" / "worktrees" / "l1" / "key.pem",
        "the host's git credentials": home / ".config" / "git" / "credentials",
    }  # fmt: skip
    values = {}
    for what, path in secrets.items():
        value = f"{what}: {uuid.uuid4().hex}"
        if "redis" in what:
            value = f"redis://:{uuid.uuid4().hex}@127.0.0.1:6390/0"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
        values[what] = value
    for name in ("HOME", "LOOPS_AGENT_HOME", "LOOPS_SANDBOX_WRITABLE", "LOOPS_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LOOPS_AGENT_HOME", str(agents))
    monkeypatch.setenv("LOOPS_SANDBOX_WRITABLE", str(marks))
    spec = agent(
        "agent_host",
        f"--look {root} --look {agents} --look {home}",
        f"--remote {remote}",
        f"--hook-mark {marks / 'hook-ran'} --beacon {marks / 'beacon'}",
        *(f"--sockets {p}" for p in sockets),
    )
    where = AgentQueue(None, "t", root, remote="origin" if origin else None)
    runner = QueuedRunner(make_runner(spec), spec, where)
    return {
        "root": root,
        "remote": remote,
        "marks": marks,
        "values": values,
        "spec": spec,
        "runner": runner,
    }


def run_two_iterations(root: Path, runner: QueuedRunner) -> list[tuple[AgentResult, float]]:
    """Two iterations of the loop, as the worker runs them (the second starts from the
    first's work, in the same clone: what the first left behind is used there)."""
    ws = Workspace(root, LOOP, "main")
    ws.ensure()
    ws.reset_to(ws.main_head())
    out = []
    for n in (1, 2):
        request = AgentRequest(
            prompt="Implement add()", worktree=ws.path, loop=LOOP, task_id="ADD-1", iteration=n
        )
        result = runner.run(request)
        out.append((result, time.time()))
        assert result.failure is None, result.failure_detail
        ws.commit_iteration(f"{LOOP}: ADD-1 iteration {n}", keep="ADD-1")
    return out


@pytest.mark.parametrize("origin", [False, True], ids=["remote-is-the-project", "remote-origin"])
def test_a_job_s_agent_reads_nothing_of_the_host_or_the_coordinator_and_moves_no_ref(
    tmp_path: Path, home: Path, ssh_agent: Path, monkeypatch: pytest.MonkeyPatch, origin: bool
) -> None:
    require_bwrap()
    runtime = home / "run"  # the host's $XDG_RUNTIME_DIR, with a gpg-agent listening
    setup = agent_host(tmp_path, home, monkeypatch, sockets=(ssh_agent, runtime), origin=origin)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    gpg = Listener(runtime / "gnupg" / "S.gpg-agent", uuid.uuid4().hex)
    root, remote, marks, values = setup["root"], setup["remote"], setup["marks"], setup["values"]
    cache_password = uuid.uuid4().hex
    cache = Listener(home / ".cache" / "git" / "credential" / "socket", cache_password)
    base = git(root, "rev-parse", "main")
    try:
        runs = run_two_iterations(root, setup["runner"])
    finally:
        cache.close()
        gpg.close()
    time.sleep(1.5)  # a hidden child would go on writing now

    f = Findings()
    for result, _ in runs:
        seen = reports(result)
        read = set(seen["files"]["read"].values())
        with f.check():
            leaked = [what for what, value in values.items() if sha(value) in read]
            assert not leaked, f"the agent read {leaked}"
        with f.check():
            assert cache.asked == 0 and seen["credential_cache"]["answer"] == "", (
                "the agent got the host's git credentials from its credential-cache daemon"
            )
        with f.check():
            answered = seen["sockets"]["answers"]
            assert not answered and gpg.asked == 0, (
                f"the host's agents answered the agent: {sorted(answered)}, gpg-agent {gpg.asked}"
            )
        with f.check():
            planted = [p for p, how in seen["hooks"]["planted"].items() if how == "written"]
            assert not planted, f"the agent wrote hooks or git config outside its tree: {planted}"
    with f.check():
        assert not (marks / "hook-ran").exists(), (
            "a hook the agent planted ran outside it:\n" + (marks / "hook-ran").read_text()
        )
    for repo in dict.fromkeys((root, remote)):
        with f.check():
            assert git(repo, "rev-parse", "main") == base, f"main moved in {repo}"
            assert not git(repo, "tag", "-l"), f"the agent pushed a tag to {repo}"
            heads = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads").split()
            assert sorted(heads) == ["refs/heads/loop/l1", "refs/heads/main"], heads
        with f.check():
            assert_not_on_main(repo, "agent_host")
    with f.check():
        ended = runs[-1][1]
        late = [t for t in (marks / "beacon").read_text().split() if float(t) > ended + 0.2]
        assert not late, f"a child of the agent wrote {len(late)} times after its job returned"
    f.done()


@pytest.mark.timeout(180)
def test_a_job_s_agent_finds_no_secret_of_its_rq_worker(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `rq worker` runs the job, as compose's `agents` service does: the Redis
    password in its URL (environment and command line, as the runbook starts it),
    `LOOPS_REDIS_PASSWORD` and `LOOPS_SIGNING_KEY` in its environment."""
    require_bwrap()
    from redis import Redis
    from rq import Queue

    url = require_real_redis()
    setup = agent_host(tmp_path, home, monkeypatch)
    root = setup["root"]
    password, key, other = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    # The real Redis has no password: any password logs in as `default`.
    secret_url = url.replace("redis://", f"redis://default:{password}@", 1)
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "REDIS_"))},
        "REDIS_URL": secret_url,
        "LOOPS_REDIS_PASSWORD": other,
        "LOOPS_SIGNING_KEY": key,
        "LOOPS_AGENT_HOME": os.environ["LOOPS_AGENT_HOME"],
        "LOOPS_SANDBOX_WRITABLE": os.environ["LOOPS_SANDBOX_WRITABLE"],
        "HOME": str(home),
    }
    name = f"test-agent-host-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(secret_url)
    queue = Queue(name, connection=redis)
    rq = [str(BIN / "rq"), "worker", "-u", secret_url, "-w", "cli.rqworker.SimpleWorker", name]
    log = tmp_path / "rq.log"
    with log.open("w") as out:
        proc = subprocess.Popen(rq, env=worker_env, stdout=out, stderr=out)
    try:
        where = AgentQueue(queue, name, root, poll_s=0.1, queue_wait_s=60)
        spec = setup["spec"]
        runs = run_two_iterations(root, QueuedRunner(make_runner(spec), spec, where))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        queue.empty()
        redis.close()

    f = Findings()
    for result, _ in runs:
        found = reports(result)["processes"]["secrets"]
        for what, value in (("password", password), ("signing key", key), ("LOOPS_REDIS_PASSWORD", other)):  # fmt: skip
            with f.check():
                assert sha(value) not in found, (
                    f"the agent found the {what} in {found.get(sha(value))}"
                )
    f.done()


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_local_remote_is_hidden_however_it_is_written(tmp_path: Path, form: str) -> None:
    """The remote the job fetches from is hidden from its agent whether the coordinator
    names it by path (compose: the project itself) or by `file://` URL."""
    from loops.jobs import _policy

    remote = make_project(tmp_path / "p", [])
    url = str(remote) if form == "path" else f"file://{remote}"
    home = tmp_path / "agent-host"
    ws = Workspace(remote, LOOP, "main", root=home / "x" / LOOP / "ws" / "worktrees")

    hidden = _policy(ws, None, [home], url).hidden

    assert remote in hidden and home in hidden
    assert _policy(ws, None, [home], "git@example.com:p.git").hidden == (
        *ws.sandbox_policy().hidden,
        home,
    )


@pytest.mark.timeout(120)
def test_a_killed_rq_worker_takes_its_agent_and_the_agent_s_setsid_child_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rq worker killed with SIGKILL mid-iteration (the case the job's lease is for):
    nothing of the agent it ran lives on to change the clone the re-run will use."""
    require_bwrap()
    from redis import Redis
    from rq import Queue

    from loops.jobs import ITERATION_JOB

    url = require_real_redis()
    root = make_project(tmp_path / "p", [])
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(root, "push", "-q", str(origin), "main", "main:refs/heads/loop/l1")
    agents = tmp_path / "agent-host"
    tick = (
        agents / hashlib.sha256(str(origin).encode()).hexdigest()[:16] / LOOP / "ws"
        / "worktrees" / LOOP / "setsid-tick.log"
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "REDIS_"))}
    env["LOOPS_AGENT_HOME"] = str(agents)
    name = f"test-agent-host-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(url)
    queue = Queue(name, connection=redis)
    queue.enqueue_call(
        ITERATION_JOB,
        kwargs={
            "prefix": name,
            "job": "j1",
            "remote_url": str(origin),
            "loop": LOOP,
            "main": "main",
            "base": git(root, "rev-parse", "main"),
            "merge_with": None,
            "prompt": "Implement add()",
            "agent": agent("setsid_child", "setsid", "stay"),
            "model": None,
            "task_id": "ADD-1",
            "iteration": 1,
            "task_iteration": 1,
            "timeout_s": 60,
        },
        timeout=120,
    )
    rq = [str(BIN / "rq"), "worker", "-u", url, "-w", "cli.rqworker.SimpleWorker", name]
    with (tmp_path / "rq.log").open("w") as out:
        proc = subprocess.Popen(rq, env=env, stdout=out, stderr=out)
    try:
        for _ in range(300):
            if tick.exists() and tick.stat().st_size > 20:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the agent never started:\n" + (tmp_path / "rq.log").read_text())
        proc.kill()
        proc.wait(timeout=10)
        time.sleep(1.0)
        size = tick.stat().st_size
        time.sleep(1.5)
        assert tick.stat().st_size == size, "the agent's child goes on writing in the clone"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        queue.empty()
        redis.close()
