"""Natural criteria: judged by a model through the anthropic SDK (a scripted Messages
API on 127.0.0.1), or signed off by a person when no model is configured."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from events import (
    Criterion,
    Decision,
    EscalationKind,
    EscalationRaised,
    NaturalCheck,
    VerificationFailed,
    VerificationPassed,
    VerificationVerdict,
)
from gates import AnthropicJudge, JudgeError
from gates.judge import parse_verdict
from tests.gates.conftest import Project
from tests.gates.test_flow import answer

DOC = Criterion(criterion="README explains mul", check=NaturalCheck(description="see README"))


class FakeModelAPI:
    """A Messages API that answers from a script: each reply is (status, text)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.hang = threading.Event()  # set: requests hang until the server stops
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                api.requests.append(body)
                if api.hang.is_set():
                    api.stopping.wait(10)
                    return
                status, text = api.replies.pop(0) if api.replies else (200, "PASS")
                payload = {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                }
                if status != 200:
                    payload = {"type": "error", "error": {"type": "api_error", "message": text}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def model_api() -> Iterator[FakeModelAPI]:
    api = FakeModelAPI()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def judge(model_api: FakeModelAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicJudge]:
    j = AnthropicJudge(
        "judge-model",
        api_key="test-key",
        base_url=model_api.url,
        timeout_s=1.0,
        max_retries=0,
    )
    try:
        yield j
    finally:
        j.close()


def test_the_judge_reads_pass_and_fail(judge: AnthropicJudge, model_api: FakeModelAPI) -> None:
    model_api.replies = [(200, "PASS\nThe README documents mul."), (200, "**FAIL**: nothing")]
    assert judge.judge(DOC, "diff --git a/README.md", []).passed is True
    verdict = judge.judge(DOC, "", [])
    assert verdict.passed is False
    request = model_api.requests[0]
    assert request["model"] == "judge-model"
    assert "README explains mul" in request["messages"][0]["content"]
    assert "diff --git a/README.md" in request["messages"][0]["content"]


def test_judge_failures_are_typed(judge: AnthropicJudge, model_api: FakeModelAPI) -> None:
    model_api.replies = [(500, "overloaded"), (200, "maybe?")]
    with pytest.raises(JudgeError, match="InternalServerError"):
        judge.judge(DOC, "", [])
    with pytest.raises(JudgeError, match="unreadable verdict"):
        judge.judge(DOC, "", [])
    model_api.hang.set()
    with pytest.raises(JudgeError, match="Timeout"):
        judge.judge(DOC, "", [])


def test_parse_verdict() -> None:
    assert parse_verdict("pass.\nok").passed is True
    assert parse_verdict("# FAIL\nno").reason == "no"
    with pytest.raises(JudgeError):
        parse_verdict("   ")


def test_a_natural_check_is_judged_by_the_model(
    project: Project, judge: AnthropicJudge, model_api: FakeModelAPI
) -> None:
    project.judge = judge
    project.start()
    a = project.loop("a")
    model_api.replies = [(200, "FAIL\nREADME unchanged"), (200, "PASS\nDocumented.")]
    a.claim("doc", a.write({"NOTES.md": "x\n"}, "no docs"))
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.CHECKS_FAILED
    assert failed.criteria[0].judged_by == "judge-model"
    assert failed.criteria[0].output_tail == "README unchanged"

    a.claim("doc", a.write({"README.md": "# tiny\n\nmul(a, b) multiplies.\n"}, "docs"))
    project.pump()
    (passed,) = project.events("verification.passed")
    assert isinstance(passed, VerificationPassed) and passed.criteria[0].passed is True
    assert "mul(a, b) multiplies" in model_api.requests[1]["messages"][0]["content"]
    assert len(project.events("merge.completed")) == 1
    project.assert_main_verified()


def test_without_a_model_a_person_signs_off(project: Project) -> None:
    project.start()
    a = project.loop("a")
    a.claim("doc", a.write({"README.md": "# tiny\n\nmul multiplies.\n"}, "docs"))
    project.pump()
    (failed,) = project.events("verification.failed")
    assert isinstance(failed, VerificationFailed)
    assert failed.verdict == VerificationVerdict.NEEDS_HUMAN
    assert failed.criteria[0].passed is None
    (raised,) = project.events("escalation.raised")
    assert isinstance(raised, EscalationRaised) and raised.kind == EscalationKind.SIGNOFF
    assert failed.escalation_id == raised.escalation_id
    assert project.events("merge.queued") == []

    answer(project, raised.escalation_id, Decision.APPROVE)
    project.pump()
    (passed,) = project.events("verification.passed")
    assert isinstance(passed, VerificationPassed)
    assert passed.criteria[0].judged_by == "human" and passed.criteria[0].passed is True
    assert len(project.events("merge.completed")) == 1
    answer(project, raised.escalation_id, Decision.APPROVE)  # a second answer changes nothing
    project.pump()
    assert len(project.events("verification.passed")) == 1


def test_a_refused_sign_off_fails_the_claim(project: Project) -> None:
    project.start()
    a = project.loop("a")
    a.claim("doc", a.write({"README.md": "# tiny\n\nTODO\n"}, "docs?"))
    project.pump()
    (raised,) = project.events("escalation.raised")
    assert isinstance(raised, EscalationRaised)
    answer(project, raised.escalation_id, Decision.REJECT)
    project.pump()
    verdicts = [e.verdict for e in project.events("verification.failed")]  # type: ignore[attr-defined]
    assert verdicts == [VerificationVerdict.NEEDS_HUMAN, VerificationVerdict.CHECKS_FAILED]
    assert "rejected by alice" in project.events("verification.failed")[-1].reason  # type: ignore[attr-defined]
    assert project.events("merge.queued") == []
