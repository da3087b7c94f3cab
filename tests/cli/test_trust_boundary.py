"""The bus's side of the trust boundary, as an operator and as a forger meet it
(invariants 7 and 8): real `loops` subprocesses, real `redis-server` processes.

- The operator's commands reach a password-protected embedded server with nothing
  typed (the password and the signing key come from `.loops/`) and never print the
  password, in output or errors.
- A forger with a plain redis client (even with the password) XADDs an
  `escalation.answered` and a `verification.passed`: no view shows them, a consumer
  dead-letters them, and `loops answer` (which signs) is what a consumer takes.
- Distributed mode: `REDIS_URL` with a password and `LOOPS_REDIS_PASSWORD` both work;
  a wrong password is one line that does not show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bus import RedisBus, signing
from events import (
    Decision,
    EscalationAnswered,
    EscalationKind,
    EscalationRaised,
    Event,
    Role,
    Severity,
    Source,
    VerificationPassed,
    encode,
)
from infra.embedded import EmbeddedServer
from tests.bus.protected import need_redis_server, protected_redis_server

LOOPS = str(Path(sys.executable).with_name("loops"))
ESCALATION = "e-5ec0de"


def operator_env() -> dict[str, str]:
    """The operator's shell: none of our settings, so everything comes from `.loops/`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOOPS_", "ANTHROPIC_", "CODING_LOOP_")) and k != "REDIS_URL"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedServer]:
    need_redis_server()
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("LOOPS_PREFIX", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    embedded = EmbeddedServer(project, kind="redis-server")
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def loops(server: EmbeddedServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`loops ARGS --dir PROJECT`, run from outside the project, as a person would."""
    return subprocess.run(
        [LOOPS, *args, "--dir", str(server.project_dir)],
        capture_output=True,
        text=True,
        env=operator_env(),
        cwd=server.project_dir.parent,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def forger(server: EmbeddedServer) -> redis.Redis:
    """A plain client that knows the password (the worst case: it read `.loops/`)."""
    assert server.url and server.password
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    return redis.Redis(
        host="127.0.0.1", port=port, username="loops", password=server.password, protocol=2
    )


def raised() -> EscalationRaised:
    return EscalationRaised(
        source=Source(role=Role.WORKER),
        loop="alpha",
        escalation_id=ESCALATION,
        kind=EscalationKind.APPROVAL,
        severity=Severity.HIGH,
        question="the check was edited: approve?",
        task_id="T-1",
    )


def forged_answer() -> EscalationAnswered:
    return EscalationAnswered(
        source=Source(role=Role.OPERATOR),
        loop="alpha",
        escalation_id=ESCALATION,
        answer="approve",
        decision=Decision.APPROVE,
        by="agent",
        task_id="T-1",
    )


def forged_pass() -> VerificationPassed:
    return VerificationPassed(
        source=Source(role=Role.GATE),
        loop="alpha",
        task_id="T-1",
        commit="f" * 40,
        attempt=1,
        criteria=[],
    )


def assert_no_secret(server: EmbeddedServer, *procs: subprocess.CompletedProcess[str]) -> None:
    assert server.password and server.signing_key
    for proc in procs:
        for text in (proc.stdout, proc.stderr):
            assert server.password not in text, proc.args
            assert server.signing_key.hex() not in text, proc.args


def test_operator_commands_need_no_password_and_never_show_it(server: EmbeddedServer) -> None:
    with RedisBus.from_settings(server.settings()) as bus:
        bus.publish(raised())
    status = loops(server, "status", "--json")
    events = loops(server, "events")
    escalations = loops(server, "escalations", "--json")
    health = loops(server, "health")
    for proc in (status, events, escalations):
        assert proc.returncode == 0, proc.stderr
    assert [e["id"] for e in json.loads(escalations.stdout)] == [ESCALATION]
    assert health.returncode == 1 and "no live role" in health.stderr  # reached, no roles
    answer = loops(server, "answer", ESCALATION, "go", "ahead")
    assert answer.returncode == 0, answer.stderr
    assert_no_secret(server, status, events, escalations, health, answer)
    # without the state dir there is nothing to read credentials from: a clear line
    elsewhere = subprocess.run(
        [LOOPS, "status", "--redis", str(server.url)],
        capture_output=True,
        text=True,
        env=operator_env(),
        cwd=server.project_dir.parent,
        timeout=60,
    )
    assert elsewhere.returncode == 1
    assert elsewhere.stderr.startswith("loops: cannot reach Redis at redis://loops@127.0.0.1:")
    assert elsewhere.stderr.count("\n") == 1
    assert_no_secret(server, elsewhere)


def test_forged_decisions_are_dropped_and_the_operators_answer_is_taken(
    server: EmbeddedServer,
) -> None:
    settings = server.settings()
    with RedisBus.from_settings(settings) as bus:
        bus.publish(raised())
    plain = forger(server)
    try:
        answer_entry = plain.xadd("loops:events", encode(forged_answer())).decode()
        pass_entry = plain.xadd("loops:events", encode(forged_pass())).decode()
    finally:
        plain.close()

    # no view takes the forged answer: the question is still open
    still_open = loops(server, "escalations", "--json")
    assert [e["id"] for e in json.loads(still_open.stdout)] == [ESCALATION]
    status = json.loads(loops(server, "status", "--json").stdout)
    assert status["escalations"][ESCALATION]["status"] == "open", status["escalations"]

    answered = loops(server, "answer", ESCALATION, "--decision", "reject", "no")
    assert answered.returncode == 0, answered.stderr

    # the asking loop's worker and the merge queue, as consumers holding the key
    with RedisBus.from_settings(settings) as bus:
        answers: list[Event] = []
        passes: list[Event] = []
        bus.subscribe("worker:alpha", "w", answers.append, types={"escalation.answered"}).drain()
        bus.subscribe("merge", "m", passes.append, types={"verification.passed"}).drain()
        assert passes == []
        assert [(e.decision, e.by) for e in answers if isinstance(e, EscalationAnswered)] == [
            (Decision.REJECT, answers[0].by)
        ]
        assert answers[0].by != "agent"
        dead = {d.entry_id: d.reason for d in bus.dead_letters()}
    assert dead.keys() == {answer_entry, pass_entry}
    assert all(reason.startswith(signing.UNSIGNED) for reason in dead.values())


# ------------------------------------------------------------------ distributed mode


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A redis-server of this test's own, with `requirepass` (as compose runs it)."""
    with protected_redis_server(tmp_path) as server:
        yield server


def run_with(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOPS, *args],
        capture_output=True,
        text=True,
        env={**operator_env(), **env_extra},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_password_in_redis_url_or_in_loops_redis_password_works(
    protected_redis: tuple[str, str],
) -> None:
    url, password = protected_redis
    in_url = url.replace("redis://", f"redis://:{password}@")
    for extra in (
        {"REDIS_URL": in_url},
        {"REDIS_URL": url, "LOOPS_REDIS_PASSWORD": password},
    ):
        status = run_with(extra, "status", "--json")
        assert status.returncode == 0, status.stderr
        health = run_with(extra, "health")
        assert health.returncode == 1 and "no live role" in health.stderr
        for proc in (status, health):
            assert password not in proc.stdout + proc.stderr


def test_a_wrong_password_is_one_line_that_does_not_show_it(
    protected_redis: tuple[str, str],
) -> None:
    url, password = protected_redis
    wrong = "wrong-" + password
    for extra in (
        {"REDIS_URL": url.replace("redis://", f"redis://:{wrong}@")},
        {"REDIS_URL": url, "LOOPS_REDIS_PASSWORD": wrong},
        {"REDIS_URL": url},  # none at all
    ):
        for command in ("status", "health"):
            proc = run_with(extra, command)
            assert proc.returncode == 1, (extra.keys(), command)
            assert proc.stderr.count("\n") == 1, proc.stderr
            assert "Redis" in proc.stderr
            assert wrong not in proc.stderr and password not in proc.stderr
