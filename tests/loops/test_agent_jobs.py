"""Agent iterations as jobs (`loops.jobs`, `loops.runners.queued`), in-process: the same
job function an rq worker runs, on real git repositories with a bare-repo remote and a
real agent executable; and embedded mode's iteration (`LoopWorker.call_agent`) doing
what the job does, through `loops.jobs.run_in_workspace`. The rq path (a real worker,
killed mid-iteration) is tests/deploy/test_agent_jobs.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from bus import BusSettings, RedisBus
from events import FailureKind
from loops.books import SpecBook
from loops.jobs import IterationJobError, public_url, result_from_json, result_to_json
from loops.runners import INTERRUPTED_DETAIL, AgentRequest, AgentResult, make_runner
from loops.runners.queued import AgentQueue, QueuedRunner
from loops.service import WorkerService
from loops.spec import parse_spec
from loops.workspace import Workspace, git
from tests.conftest import require_real_redis

AGENT = """\
#!{python}
import os, pathlib
tree = pathlib.Path(os.environ["LOOPS_WORKTREE"])
(tree / "notes.txt").write_text("from the agent host\\n")
(tree / "shared.txt").write_text("resolved\\n")
print("<promise>done</promise>")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    """(repo, bare remote, agent spec): main pushed to the remote as `origin`."""
    monkeypatch.setenv("LOOPS_AGENT_HOME", str(tmp_path / "agent-host"))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT.format(python=sys.executable))
    agent.chmod(0o755)
    return repo, origin, f"command:{agent}"


def fresh(repo: Path) -> Workspace:
    """Loop l1's work tree, at main."""
    ws = Workspace(repo, "l1", "main")
    ws.ensure()
    ws.reset_to(ws.main_head())
    return ws


def runner(repo: Path, spec: str) -> QueuedRunner:
    return QueuedRunner(make_runner(spec), spec, AgentQueue(None, "t", repo, remote="origin"))


def request(ws: Workspace, iteration: int = 1) -> AgentRequest:
    return AgentRequest(
        prompt="do it", worktree=ws.path, loop="l1", task_id="T-1", iteration=iteration
    )


def test_the_job_runs_in_its_own_clone_and_pushes_only_the_loop_branch(
    project: tuple[Path, Path, str],
) -> None:
    repo, origin, spec = project
    ws = Workspace(repo, "l1", "main")
    ws.ensure()
    base = ws.main_head()
    ws.reset_to(base)

    result = runner(repo, spec).run(request(ws))

    assert result.failure is None and "<promise>done</promise>" in result.reply
    pushed = git(origin, "rev-parse", "loop/l1")
    assert git(origin, "rev-parse", f"{pushed}^") == base  # one commit on the base
    assert git(origin, "rev-parse", "main") == base  # main untouched
    # The work is in the loop's own work tree, for the worker to commit as its own.
    assert (ws.path / "notes.txt").read_text() == "from the agent host\n"
    done = ws.commit_iteration("l1: T-1 iteration 1", keep="T-1")
    assert done.changed_files == ["notes.txt", "shared.txt"]
    assert git(repo, "rev-parse", f"{done.commit}^{{tree}}") == git(
        origin, "rev-parse", f"{pushed}^{{tree}}"
    )


def test_a_conflict_with_main_is_merged_on_the_agent_host_and_resolved_there(
    project: tuple[Path, Path, str],
) -> None:
    repo, _, spec = project
    ws = fresh(repo)
    (ws.path / "shared.txt").write_text("loop\n")
    mine = ws.commit_iteration("l1: T-1 iteration 1", keep="T-1").commit
    assert mine is not None
    (repo / "shared.txt").write_text("main moved\n")
    git(repo, "commit", "-qam", "main moved")
    assert ws.merge_main() == ["shared.txt"]  # the merge stays in progress, for the agent

    result = runner(repo, spec).run(request(ws, iteration=2))

    assert result.failure is None
    done = ws.commit_iteration("l1: T-1 iteration 2", keep="T-1")
    assert done.commit is not None
    parents = git(repo, "rev-list", "--parents", "-n1", done.commit).split()[1:]
    assert parents == [mine, git(repo, "rev-parse", "main")]  # a merge of main, resolved
    assert (ws.path / "shared.txt").read_text() == "resolved\n"


def test_work_that_is_not_one_commit_on_the_base_is_refused(
    project: tuple[Path, Path, str],
) -> None:
    """An agent host's word is checked: a commit that is not on top of the iteration's
    base (a history of its own, say) is not taken into the loop."""
    repo, _, spec = project
    ws = Workspace(repo, "l1", "main")
    ws.ensure()
    base = ws.main_head()
    ws.reset_to(base)
    (repo / "other.txt").write_text("elsewhere\n")
    git(repo, "add", "-A")
    tree = git(repo, "write-tree")
    git(repo, "reset", "-q", "--hard", base)
    stray = git(repo, "commit-tree", tree, "-m", "a history of its own")  # no parent
    git(repo, "push", "-q", "--force", "origin", f"{stray}:refs/heads/loop/l1")

    why = runner(repo, spec)._take(ws, base, stray)

    assert why is not None and "does not descend from the base" in why
    assert not (ws.path / "other.txt").exists()


def test_the_job_runs_only_on_the_base_the_remote_holds(
    project: tuple[Path, Path, str],
) -> None:
    from loops.jobs import run_iteration

    repo, origin, spec = project
    base = git(repo, "rev-parse", "main")
    git(repo, "push", "-q", "origin", "main:refs/heads/loop/l1")
    with pytest.raises(IterationJobError, match="not at the iteration's base"):
        run_iteration(
            prefix="t",
            job="j",
            remote_url=str(origin),
            loop="l1",
            main="main",
            base="0" * 40,
            merge_with=None,
            prompt="p",
            agent=spec,
            model=None,
            task_id="T-1",
            iteration=1,
            task_iteration=1,
            timeout_s=30,
        )
    assert git(origin, "rev-parse", "loop/l1") == base  # nothing pushed


def test_the_evidence_round_trips_and_a_garbled_one_is_an_error() -> None:
    result = AgentResult(
        reply="ok", failure=FailureKind.USAGE_LIMIT, failure_detail="limit", commands=["ls"]
    )
    back, commit = result_from_json(result_to_json(result, "a" * 40))
    assert back == result and commit == "a" * 40
    for garbled in ('{"result": {"reply": ["x"]}}', '{"result": {}}', "[]", "{"):
        with pytest.raises(IterationJobError):
            result_from_json(garbled)
    with pytest.raises(IterationJobError):
        result_from_json(result_to_json(result, "HEAD~1"))


def test_the_remote_url_given_to_agent_hosts_holds_no_credentials() -> None:
    assert public_url("https://user:tok3n@git.example.com/p.git") == "https://git.example.com/p.git"
    assert public_url("git@git.example.com:p.git") == "git@git.example.com:p.git"
    assert public_url("/srv/p.git") == "/srv/p.git"


@pytest.fixture
def rq_queue() -> Iterator[Any]:
    """An rq queue of its own on the real Redis (rq needs a real server's commands)."""
    from redis import Redis
    from rq import Queue

    redis = Redis.from_url(require_real_redis())
    queue = Queue(f"test-agents-{uuid.uuid4().hex[:8]}", connection=redis)
    yield queue
    queue.empty()
    redis.close()


def test_with_no_agent_worker_the_iteration_is_an_outage_with_a_hint_that_works(
    project: tuple[Path, Path, str], rq_queue: Any
) -> None:
    repo, _, spec = project
    ws = fresh(repo)
    where = AgentQueue(rq_queue, "t", repo, remote="origin", poll_s=0.02, queue_wait_s=0.3)

    result = QueuedRunner(make_runner(spec), spec, where).run(request(ws))

    assert result.failure is FailureKind.OUTAGE and result.failure_detail
    hint = result.failure_detail.split("`")[1]
    assert hint == f'rq worker -u "$REDIS_URL" -w cli.rqworker.SimpleWorker {rq_queue.name}'
    assert rq_queue.count == 1  # still queued: the retry waits on the same job


def test_a_stop_while_the_iteration_is_queued_cancels_its_job(
    project: tuple[Path, Path, str], rq_queue: Any
) -> None:
    repo, _, spec = project
    ws = fresh(repo)
    cancel = threading.Event()
    cancel.set()
    where = AgentQueue(rq_queue, "t", repo, remote="origin", poll_s=0.02)

    result = QueuedRunner(make_runner(spec), spec, where).run(replace(request(ws), cancel=cancel))

    assert result.failure_detail == INTERRUPTED_DETAIL
    assert rq_queue.count == 0


KEY = "sk-ant-api03-" + "k" * 24  # a key's shape: redacted wherever it is found


class LeakyAgent:
    """An agent in this process, with no launcher of its own to clean up after it: it
    changes a file, leaves a detached process behind in its work tree (what an
    unsandboxed agent's `setsid cmd &` does), and puts a key in its reply and transcript."""

    name = "test:leaky"

    def __init__(self) -> None:
        self.strays: list[subprocess.Popen[bytes]] = []

    def run(self, request: AgentRequest) -> AgentResult:
        (request.worktree / "notes.txt").write_text("work\n")
        env = {**os.environ, "LOOPS_WORKTREE": str(request.worktree)}
        stray = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
        self.strays.append(stray)
        return AgentResult(reply=f"used {KEY}", transcript=f"$ echo {KEY}", duration_s=0.1)


def embedded(repo: Path, agent: LeakyAgent) -> tuple[str, str]:
    """One iteration of a loop that runs `agent` in its own process: (what it wrote
    about the run: transcripts and state, the commit on its branch)."""
    spec = """
goal: "g"
tasks:
  - id: T-1
    title: "t"
    description: "d"
    acceptance_criteria:
      - criterion: "c"
        check: {type: script, run: "true"}
"""
    (repo / "SPEC.yaml").write_text(spec)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "spec")
    client = fakeredis.FakeRedis(protocol=2)
    bus = RedisBus(client, settings=BusSettings(prefix=f"t-{uuid.uuid4().hex[:8]}"))
    book = SpecBook(parse_spec(spec), repo / "SPEC.yaml", repo / ".loops" / "state", 1)
    WorkerService(bus, book, agent, repo, heartbeat_s=60).run(threading.Event(), until_idle=True)
    client.close()
    state = book.state_dir
    written = "".join(p.read_text() for p in state.rglob("*") if p.is_file() and p.suffix)
    return written, git(repo, "rev-parse", "loop/spec")


@pytest.mark.parametrize("mode", ["embedded", "job"])
def test_both_modes_kill_the_agent_s_leftovers_redact_its_words_and_commit_its_work(
    project: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """An iteration does the same in a loop's own process as in an agent host's rq job
    (`loops.jobs.run_in_workspace`): whatever the runner, its stray processes die when
    the run ends, what it said is redacted before anything is written or returned, and
    its work is committed on the loop's branch."""
    repo, origin, spec = project
    agent = LeakyAgent()
    try:
        if mode == "embedded":
            written, commit = embedded(repo, agent)
            assert "used [REDACTED]" in written and KEY not in written
        else:
            monkeypatch.setattr("loops.jobs.make_runner", lambda *_a, **_k: agent)
            result = runner(repo, spec).run(request(fresh(repo)))
            assert result.reply == "used [REDACTED]" and KEY not in result.transcript
            commit = git(origin, "rev-parse", "loop/l1")
            assert "Loops-Job: agent-" in git(origin, "log", "-1", "--format=%B", commit)
        assert git(repo, "show", f"{commit}:notes.txt") == "work"
        (stray,) = agent.strays
        assert stray.wait(timeout=5) == -signal.SIGKILL  # killed, not left running
    finally:
        for stray in agent.strays:
            stray.kill()
            stray.wait()


def test_an_agent_host_that_cannot_sandbox_runs_no_agent_unless_told_off(
    project: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an agent host `auto` means required: the rq worker beside the agent holds the
    bus's password. Without bwrap the iteration comes back unrunnable (the task blocks
    with the reason and the fix), nothing ran and nothing was pushed; with
    LOOPS_SANDBOX=off, as the reason says, it runs."""
    repo, origin, spec = project
    ws = fresh(repo)
    bin_dir = tmp_path / "bin"  # git, and no bwrap
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("LOOPS_SANDBOX", raising=False)

    result = runner(repo, spec).run(request(ws))

    assert result.unrunnable and result.failure is FailureKind.AGENT_ERROR
    assert "bwrap (bubblewrap) is not on PATH" in (result.failure_detail or "")
    assert "set LOOPS_SANDBOX=off in the rq worker's environment" in (result.failure_detail or "")
    assert not (ws.path / "notes.txt").exists()
    assert git(origin, "rev-parse", "loop/l1") == ws.main_head()  # the base, no more

    monkeypatch.setenv("LOOPS_SANDBOX", "off")  # the fix, as written
    result = runner(repo, spec).run(request(ws))
    assert result.failure is None and (ws.path / "notes.txt").is_file()
