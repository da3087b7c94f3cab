"""AnthropicRefiner against a fake Messages API on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.refiner import AnthropicRefiner, RefineFailed, RefineRequest

REQUEST = RefineRequest("api", "T3", "5 failures for 3 reasons", ("ImportError: x", "TypeError: y"))


@contextmanager
def fake_api(
    reply: str = "Split it in two.", status: int = 200, delay_s: float = 0.0
) -> Iterator[dict[str, Any]]:
    seen: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["requests"].append(
                {
                    "path": self.path,
                    "body": body,
                    "key": self.headers.get("x-api-key") or self.headers.get("authorization"),
                }
            )
            time.sleep(delay_s)
            payload = (
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": reply}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                }
                if status == 200
                else {"type": "error", "error": {"type": "api_error", "message": "boom"}}
            )
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_asks_the_model_through_anthropic_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_api("Step 1: add the parser. Step 2: wire it.") as api:
        refiner = AnthropicRefiner(
            api_key="test-key",
            base_url=api["url"],
            model="m-test",
            describe_task=lambda loop, task: f"{loop}/{task}: add a CLI",
        )
        try:
            assert refiner.refine(REQUEST) == "Step 1: add the parser. Step 2: wire it."
        finally:
            refiner.close()
        [req] = api["requests"]
        assert req["path"] == "/v1/messages" and "test-key" in req["key"]
        prompt = req["body"]["messages"][0]["content"]
        assert "api/T3: add a CLI" in prompt and "ImportError: x" in prompt
        assert req["body"]["model"] == "m-test"


def test_an_api_error_is_a_refine_failure() -> None:
    with fake_api(status=500) as api:
        refiner = AnthropicRefiner(api_key="k", base_url=api["url"], max_retries=0)
        try:
            with pytest.raises(RefineFailed, match="model call failed"):
                refiner.refine(REQUEST)
        finally:
            refiner.close()


def test_a_slow_model_times_out() -> None:
    with fake_api(delay_s=1.5) as api:
        refiner = AnthropicRefiner(api_key="k", base_url=api["url"], timeout_s=0.3, max_retries=0)
        try:
            with pytest.raises(RefineFailed, match="Timeout"):
                refiner.refine(REQUEST)
        finally:
            refiner.close()


def test_an_empty_proposal_is_a_failure() -> None:
    with fake_api(reply="  ") as api:
        refiner = AnthropicRefiner(api_key="k", base_url=api["url"], max_retries=0)
        try:
            with pytest.raises(RefineFailed, match="empty"):
                refiner.refine(REQUEST)
        finally:
            refiner.close()
