"""A TCP proxy in front of Redis that fails exactly one command, for tests of what a
lost write does to the system.

Arm it with a marker (bytes that only the command to fail carries, such as an event
type) and a mode:
- `drop_request`: the command never reaches Redis; the client's connection is cut;
- `drop_reply`: Redis executes the command, but the client never gets the reply (its
  connection is cut instead), so it cannot know the write landed.
Every other byte passes through unchanged. One thread per direction per connection;
`close()` stops them all."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["drop_request", "drop_reply"]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._mode: Mode = "drop_request"
        self.fired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def arm(self, marker: bytes, mode: Mode = "drop_request") -> None:
        """Fail the next command whose bytes contain `marker` (once)."""
        with self._lock:
            self._marker, self._mode = marker, mode
            self.fired.clear()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                _shut(s)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:  # the upstream is gone (the test is over): refuse this client
                _shut(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            swallow = threading.Event()  # drop_reply: cut instead of passing the reply on
            threading.Thread(
                target=self._requests, args=(client, server, swallow), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(server, client, swallow), daemon=True
            ).start()

    def _take(self, chunk: bytes) -> Mode | None:
        with self._lock:
            if self._marker is None or self._marker not in chunk:
                return None
            self._marker = None
            self.fired.set()
            return self._mode

    def _requests(
        self, client: socket.socket, server: socket.socket, swallow: threading.Event
    ) -> None:
        try:
            while chunk := client.recv(65536):
                fault = self._take(chunk)
                if fault == "drop_request":
                    break
                if fault == "drop_reply":
                    swallow.set()
                server.sendall(chunk)
        except OSError:
            pass
        _shut(client)
        if not swallow.is_set():
            _shut(server)

    def _replies(
        self, server: socket.socket, client: socket.socket, swallow: threading.Event
    ) -> None:
        try:
            while chunk := server.recv(65536):
                if swallow.is_set():
                    break  # the command ran; its reply (and the connection) is lost
                client.sendall(chunk)
        except OSError:
            pass
        _shut(client)
        _shut(server)


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
