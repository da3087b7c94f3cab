"""A scripted mock of the Anthropic Messages API on 127.0.0.1, for real clients.

The real `anthropic` SDK and the real Claude Code CLI talk to it over HTTP, exactly as
they would to the API. A script is a list of turns; each agent request (one that
offers tools) takes the next turn. Requests without tools (titles, quota probes and
other side calls Claude Code makes) get a short text answer and take no turn. When
the turns run out, the mock ends the conversation with a short text.

A turn is a dict:

```python
{"content": [{"type": "text", "text": "hi"},
             {"type": "tool_use", "name": "Write", "input": {"file_path": "/x", "content": "y"}}],
 "stop_reason": "tool_use",              # default: tool_use if any tool_use block, else end_turn
 "usage": {"input_tokens": 10, "output_tokens": 5}}     # default: estimated
{"status": 429, "headers": {"retry-after": "30"}}       # an error; type and message optional
{"status": 529}                                         # overloaded
```

`POST /v1/messages` answers JSON, or SSE (`event:` and `data:` lines: message_start,
content_block_start, content_block_delta with text_delta / input_json_delta,
content_block_stop, message_delta, message_stop) when the request says `stream`.
`POST /v1/messages/count_tokens` counts; other GET/HEAD probes answer 200 `{}`.

Run standalone: `python -m tests.fakes.mock_anthropic SCRIPT.json` prints its base URL.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    """One request the mock received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def has_tools(self) -> bool:
        return bool(self.body.get("tools"))


@dataclass
class _State:
    turns: list[dict[str, Any]]
    aux_reply: str
    done_reply: str
    next_turn: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class MockAnthropic:
    """The mock server. Use as a context manager, or `start()` / `close()`."""

    def __init__(
        self,
        turns: list[dict[str, Any]] | None = None,
        *,
        aux_reply: str = "OK",
        done_reply: str = "Done.",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._state = _State(list(turns or []), aux_reply, done_reply)
        self._server = _Server((host, port), _Handler)
        self._server.state = self._state
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MockAnthropic:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> MockAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scripting and inspection ------------------------------------------------------

    def script(self, turns: list[dict[str, Any]]) -> None:
        """Replace the remaining turns."""
        with self._state.lock:
            self._state.turns = list(turns)
            self._state.next_turn = 0

    def add_turns(self, *turns: dict[str, Any]) -> None:
        with self._state.lock:
            self._state.turns.extend(turns)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def agent_requests(self) -> list[RecordedRequest]:
        """The /v1/messages requests that offered tools (the ones that take turns)."""
        return [r for r in self.requests if r.path == "/v1/messages" and r.has_tools]

    @property
    def turns_used(self) -> int:
        with self._state.lock:
            return self._state.next_turn


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) closes its end; that is not our error.
        if isinstance(sys.exc_info()[1], ConnectionError | OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        # Keep-alive handlers block in recv(); shutting their sockets down ends them.
        with self.sockets_lock:
            for sock in list(self.open_sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- routing ---------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._record({})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record({})
        self._json(200, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "body is not JSON")
            return
        path = self._record(body if isinstance(body, dict) else {})
        if path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": _estimate(body)})
        elif path == "/v1/messages":
            self._messages(body)
        else:
            self._json(200, {})

    def _record(self, body: dict[str, Any]) -> str:
        path = self.path.split("?", 1)[0]
        with self.server.state.lock:
            self.server.state.requests.append(
                RecordedRequest(self.command, path, dict(self.headers.items()), body)
            )
        return path

    # --- /v1/messages ----------------------------------------------------------------

    def _messages(self, body: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            if body.get("tools"):
                if state.next_turn < len(state.turns):
                    turn = state.turns[state.next_turn]
                    state.next_turn += 1
                else:
                    turn = {"content": [{"type": "text", "text": state.done_reply}]}
            else:
                turn = {"content": [{"type": "text", "text": state.aux_reply}]}
            msg_id = f"msg_mock{next(state.ids):06d}"
        if turn.get("delay_s"):
            time.sleep(float(turn["delay_s"]))
        status = int(turn.get("status", 200))
        if status != 200:
            self._error(status, turn.get("message"), turn.get("type"), turn.get("headers"))
            return
        message = _message(msg_id, body, turn)
        if body.get("stream"):
            self._sse(message)
        else:
            self._json(200, message)

    def _sse(self, message: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{message['id']}")
        self.end_headers()
        self.close_connection = True
        start = dict(message, content=[], stop_reason=None, stop_sequence=None)
        start["usage"] = dict(message["usage"], output_tokens=1)
        self._event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            if block["type"] == "tool_use":
                opening = dict(block, input={})
                self._event("content_block_start", _block_start(index, opening))
                args = json.dumps(block["input"])
                for piece in _chunks(args, 24):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    self._event("content_block_delta", _delta(index, delta))
            else:
                self._event(
                    "content_block_start", _block_start(index, {"type": "text", "text": ""})
                )
                self._event("ping", {"type": "ping"})
                for piece in _chunks(block["text"], 16):
                    self._event(
                        "content_block_delta", _delta(index, {"type": "text_delta", "text": piece})
                    )
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        self._event("message_stop", {"type": "message_stop"})

    def _event(self, name: str, data: Mapping[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_mock")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        message: str | None = None,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        kind = kind or _ERROR_TYPES.get(status, "api_error")
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or f"mock {kind}"},
            "request_id": "req_mock",
        }
        self._json(status, body, headers)


def _message(msg_id: str, body: dict[str, Any], turn: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for n, block in enumerate(turn.get("content", [])):
        if block.get("type") == "tool_use":
            content.append(
                {
                    "type": "tool_use",
                    "id": block.get("id") or f"toolu_{msg_id[4:]}_{n}",
                    "name": block["name"],
                    "input": block.get("input", {}),
                }
            )
        else:
            content.append({"type": "text", "text": str(block.get("text", ""))})
    has_tools = any(b["type"] == "tool_use" for b in content)
    usage = {
        "input_tokens": _estimate(body),
        "output_tokens": max(1, len(json.dumps(content)) // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    usage.update(turn.get("usage", {}))
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-mock"),
        "content": content,
        "stop_reason": turn.get("stop_reason") or ("tool_use" if has_tools else "end_turn"),
        "stop_sequence": None,
        "usage": usage,
    }


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _estimate(body: Any) -> int:
    return max(1, len(json.dumps(body.get("messages", []) if isinstance(body, dict) else [])) // 4)


def main(argv: list[str]) -> int:
    """`python -m tests.fakes.mock_anthropic SCRIPT.json [PORT]`: serve until Ctrl-C."""
    if not argv:
        print("usage: python -m tests.fakes.mock_anthropic SCRIPT.json [PORT]", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        data = json.load(fh)
    turns = data["turns"] if isinstance(data, dict) else data
    port = int(argv[1]) if len(argv) > 1 else 0
    with MockAnthropic(turns, port=port) as mock:
        print(f"ANTHROPIC_BASE_URL={mock.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
