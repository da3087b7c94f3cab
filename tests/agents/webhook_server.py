"""A webhook receiver on 127.0.0.1 that checks each request's signature."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Receiver:
    secret: str
    fail_first: int = 0  # answer 500 to this many requests first
    status_after: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    rejected: int = 0
    requests: int = 0
    url: str = ""


@contextmanager
def webhook_server(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.requests += 1
            if not verify(receiver.secret, body, self.headers.get(SIGNATURE_HEADER)):
                receiver.rejected += 1
                self.send_response(401)
            elif receiver.requests <= receiver.fail_first:
                self.send_response(500)
            else:
                receiver.received.append(json.loads(body))
                receiver.deliveries.append(self.headers.get(DELIVERY_HEADER, ""))
                self.send_response(receiver.status_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
