"""The dashboard's HTTP side on the real Redis: reading is open, every action needs the
token, bad input is refused, and the Host header is checked on loopback."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

import events as ev
from app.dashboard import create_app, dashboard_url, is_loopback, resolve_token, serve
from infra.settings import Settings, secret
from tests.cli.conftest import LOOPS, System
from tests.cli.sample import raised, scenario
from tests.conftest import wait_until

TOKEN = "s3cret-token"


@pytest.fixture
def client(system: System) -> Iterator[TestClient]:
    system.bus.publish_many(scenario())
    app = create_app(system.bus, TOKEN, allowed_hosts=["testserver", "127.0.0.1"])
    with TestClient(app) as c:
        yield c


def published(system: System, etype: str) -> list[ev.Event]:
    return [e for _, e in system.bus.replay(types=[etype])]


def test_page_and_view_are_served_with_a_strict_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "coding-loops" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    view = client.get("/api/view").json()
    assert view["loops"]["loop-api"]["tasks"]["API-1"]["status"] == "merged"
    assert view["escalations"]["e-1a2b3c"]["status"] == "open"


def test_actions_without_or_with_a_wrong_token_are_403(system: System, client: TestClient) -> None:
    body = {"escalation_id": "e-1a2b3c", "answer": "410"}
    assert client.post("/api/answer", json=body).status_code == 403
    assert (
        client.post("/api/answer", json=body, headers={"X-Loops-Token": "nope"}).status_code == 403
    )
    assert client.post("/api/answer", json={**body, "token": "nope"}).status_code == 403
    assert (
        client.post("/api/control", json={"action": "pause", "loop": "loop-api"}).status_code == 403
    )
    assert client.post("/api/token", json={}).status_code == 403
    assert published(system, "escalation.answered") == published(system, "loop.pause") == []
    assert client.post("/api/token", json={"token": TOKEN}).status_code == 200


def test_answer_with_the_token(system: System, client: TestClient) -> None:
    auth = {"X-Loops-Token": TOKEN}
    reply = client.post(
        "/api/answer",
        json={"escalation_id": "e-1a2b3c", "answer": "410 Gone", "decision": "approve"},
        headers=auth,
    )
    assert reply.status_code == 200, reply.text
    [answer] = published(system, "escalation.answered")
    assert isinstance(answer, ev.EscalationAnswered)
    assert (answer.escalation_id, answer.answer, answer.decision) == (
        "e-1a2b3c",
        "410 Gone",
        ev.Decision.APPROVE,
    )
    assert answer.source.role is ev.Role.OPERATOR and answer.task_id == "API-2"
    wait_until(
        lambda: client.get("/api/view").json()["escalations"]["e-1a2b3c"]["status"] == "answered"
    )
    again = client.post(
        "/api/answer", json={"escalation_id": "e-1a2b3c", "answer": "x"}, headers=auth
    )
    assert again.status_code == 409
    unknown = client.post(
        "/api/answer", json={"escalation_id": "e-zzz", "answer": "x"}, headers=auth
    )
    assert unknown.status_code == 404
    bad = client.post(
        "/api/answer", json={"escalation_id": "e-1a2b3c", "decision": "maybe"}, headers=auth
    )
    assert bad.status_code == 400
    assert client.post("/api/answer", content=b"not json", headers=auth).status_code == 400


def test_control_with_the_token(system: System, client: TestClient) -> None:
    auth = {"X-Loops-Token": TOKEN}
    reply = client.post(
        "/api/control",
        json={"action": "reset", "loop": "loop-ui", "task_id": "UI-2", "hint": "h"},
        headers=auth,
    )
    assert reply.status_code == 200, reply.text
    [reset] = published(system, "task.reset")
    assert isinstance(reset, ev.TaskReset)
    assert (reset.loop, reset.task_id, reset.hint, reset.id) == (
        "loop-ui",
        "UI-2",
        "h",
        reply.json()["command_id"],
    )
    assert reset.source.role is ev.Role.DASHBOARD
    assert (
        client.post(
            "/api/control", json={"action": "pause", "loop": "loop-xx"}, headers=auth
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/control", json={"action": "rm -rf", "loop": "loop-ui"}, headers=auth
        ).status_code
        == 400
    )
    assert (
        client.post(
            "/api/control", json={"action": "reset", "loop": "loop-ui"}, headers=auth
        ).status_code
        == 400
    )


def test_events_published_later_reach_the_view(system: System, client: TestClient) -> None:
    system.bus.publish(raised("e-later1"))
    wait_until(lambda: "e-later1" in client.get("/api/view").json()["escalations"])


def test_other_host_headers_are_refused(client: TestClient) -> None:
    assert client.get("/api/view", headers={"Host": "attacker.example"}).status_code == 400


def test_token_from_env_or_a_private_file(tmp_path: Path) -> None:
    configured = secret(Settings.from_env({"LOOPS_DASHBOARD_TOKEN": "from-env"}).dashboard_token)
    assert resolve_token(tmp_path, configured) == ("from-env", None)
    token, path = resolve_token(tmp_path, secret(Settings.from_env({}).dashboard_token))
    assert path == tmp_path / ".loops" / "dashboard.token"
    assert path.read_text().strip() == token and len(token) >= 24
    assert path.stat().st_mode & 0o777 == 0o600
    assert resolve_token(tmp_path)[0] != token


def test_loopback_and_urls() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert dashboard_url("127.0.0.1", 8765, "t") == "http://127.0.0.1:8765/#token=t"


def test_serve_runs_until_stop_and_streams_events(system: System) -> None:
    system.bus.publish_many(scenario())
    stop = threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=serve, args=(system.bus, "127.0.0.1", 0, TOKEN, stop, urls.append)
    )
    thread.start()
    try:
        url = wait_until(lambda: urls and urls[0])
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        with httpx.stream("GET", url + "api/events", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: hello"
            system.bus.publish(raised("e-stream"))
            data = next(line for line in lines if line.startswith("data:") and "e-stream" in line)
            assert '"type":"escalation.raised"' in data
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_loops_dashboard_process_prints_its_address_and_stops_on_sigterm(system: System) -> None:
    proc = subprocess.Popen(
        [LOOPS, "dashboard", "--port", "0", "--dir", str(system.cwd), "--redis", system.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=system.env,
        cwd=system.cwd,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        token_file = system.cwd / ".loops" / "dashboard.token"
        token = token_file.read_text().strip()
        assert oct(token_file.stat().st_mode & 0o777) == oct(0o600)
        # not a terminal: the output is a log, which never gets the token
        assert token not in line and f"token in {token_file}" in line
        page = line.split()[1].split("#")[0]
        assert httpx.get(page + "api/view", timeout=5).status_code == 200
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "Traceback" not in err


def test_a_planted_secret_never_reaches_an_api_response(system: System) -> None:
    """Published through the bus (redacted there) or XADDed past it by someone with
    bus access: neither the view nor the live feed shows the secret."""
    published_key = "sk-ant-api03-" + "Pl4nted0" * 6
    raw_key = "ghp_" + "R4wXadd3d" * 4
    stop = threading.Event()
    urls: list[str] = []
    thread = threading.Thread(
        target=serve, args=(system.bus, "127.0.0.1", 0, TOKEN, stop, urls.append)
    )
    thread.start()
    try:
        url = wait_until(lambda: urls and urls[0])
        with httpx.stream("GET", url + "api/events", timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: hello"
            system.bus.publish(
                raised("e-pub").model_copy(update={"question": f"is {published_key} ok?"})
            )
            bypass = raised("e-raw").model_copy(update={"question": f"and {raw_key}?"})
            system.bus.client.xadd(system.bus.stream, ev.encode(bypass))
            feed = [
                next(line for line in lines if line.startswith("data:") and eid in line)
                for eid in ("e-pub", "e-raw")
            ]
        view = wait_until(
            lambda: (r := httpx.get(url + "api/view", timeout=5).text) and "e-raw" in r and r
        )
    finally:
        stop.set()
        thread.join(timeout=15)
    for text in (*feed, view):
        assert published_key not in text and raw_key not in text
        assert "[REDACTED]" in text
