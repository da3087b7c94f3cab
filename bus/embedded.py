"""The embedded default: with no Redis URL, coding-loops starts and owns a
Redis-compatible server on 127.0.0.1, and records its URL in the project's state
directory (`DIR/.loops/redis.url`, with `redis.pid`), so that `loops status`,
`loops events` and `loops answer` in another terminal reach the same state.

A `redis-server` binary on PATH is preferred: no RDB snapshots, an append-only file
(fsync every second) under `DIR/.loops/redis`, so that the next `loops up` resumes
with the stream, the consumer groups and open escalations. Without one, fakeredis's
TCP server runs in a subprocess (`python -m bus.fakeserver --port N`): correct, but
memory only, and every pipeline costs it ~44 ms.
The server runs in its own session, so it outlives a `kill -9` of its owner; the
next `EmbeddedServer.start()` in that directory adopts it, state intact.
`DIR/.loops/redis.owner` holds the pid of the process that stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import redis

from bus.settings import BusSettings, connect
from events import ConfigError, LoopsError

log = logging.getLogger("loops.bus")

STATE_DIR = ".loops"
URL_FILE = "redis.url"
PID_FILE = "redis.pid"
OWNER_FILE = "redis.owner"  # pid of the process that stops the server when it is done
Kind = Literal["auto", "redis-server", "fakeredis"]


class ServerStartFailed(LoopsError):
    """Raised when the embedded Redis-compatible server does not come up."""

    def __init__(self, message: str, command: list[str] | None = None) -> None:
        super().__init__(message)
        self.command = command


def state_dir(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The project's state directory, `DIR/.loops`."""
    return Path(project_dir or ".").resolve() / STATE_DIR


def recorded_url(project_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The URL an embedded server of `project_dir` recorded, if any (maybe stale)."""
    path = state_dir(project_dir) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url or None


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis at `url` answers PING within `timeout` seconds."""
    client = connect(
        BusSettings(url=url, block_ms=0, socket_timeout=timeout, socket_connect_timeout=timeout)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def resolve_url(
    explicit_url: str | None = None, project_dir: str | os.PathLike[str] | None = None
) -> str:
    """The Redis to use: `--redis URL`, else `$REDIS_URL`, else the running embedded
    server of `project_dir`. `ConfigError` when there is none."""
    for url in (explicit_url, os.environ.get("REDIS_URL")):
        if url:
            return BusSettings.from_dsn(url).url
    url = recorded_url(project_dir)
    if url and reachable(url):
        return url
    shown = project_dir or "."
    raise ConfigError(
        f"no coding-loops system is running in {shown} "
        f"(start one with `loops up {shown}`) and REDIS_URL is not set"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EmbeddedServer:
    """A Redis-compatible server on 127.0.0.1 for the project in `project_dir`.

    `start()` returns its URL. When DIR already runs one, it is reused: owned by
    another live process (another terminal's `loops up`), it is only used and left
    running on `stop()`; whose owner died (kill -9), it is adopted and owned.
    `stop()` terminates an owned server and removes the records. Usable as a
    context manager."""

    def __init__(
        self,
        project_dir: str | os.PathLike[str] | None = None,
        *,
        kind: Kind = "auto",
        start_timeout: float = 10.0,
    ) -> None:
        self.project_dir = Path(project_dir or ".").resolve()
        self.state_dir = state_dir(self.project_dir)
        self.kind = kind
        self.start_timeout = start_timeout
        self.url: str | None = None
        self.pid: int | None = None
        self.adopted = False  # took over a server whose owner died
        self.owned = False  # this object stops the server on `stop()`
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "redis.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _command(self, port: int) -> list[str]:
        binary = shutil.which("redis-server") if self.kind != "fakeredis" else None
        if self.kind == "redis-server" and binary is None:
            raise ServerStartFailed("redis-server is not on PATH")
        if binary:
            data = self.state_dir / "redis"
            data.mkdir(exist_ok=True)
            return [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                # Persistent, so that `loops up` again resumes with the stream,
                # consumer groups and open escalations of the last run.
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--dir", str(data),
                "--logfile", str(self.state_dir / "redis.log"),
                "--daemonize", "no",
            ]  # fmt: skip
        return [sys.executable, "-m", "bus.fakeserver", "--port", str(port)]

    def start(self) -> str:
        """Start (or adopt) the server, record its URL and pid; returns the URL."""
        if self.url is not None:
            return self.url
        with self._locked():
            url = recorded_url(self.project_dir)
            pid = self._read_pid(PID_FILE)
            if url and pid and _alive(pid) and reachable(url):
                self.url, self.pid = url, pid
                owner = self._read_pid(OWNER_FILE)
                if owner and owner != os.getpid() and _alive(owner):
                    # another live process runs it (e.g. `loops up` in another
                    # terminal): use it, and leave stopping it to that process
                    log.info("bus: using the embedded server at %s (owner pid %d)", url, owner)
                    return url
                self.adopted = self.owned = True
                _write(self.state_dir / OWNER_FILE, f"{os.getpid()}\n")
                log.info("bus: adopted the embedded server at %s (pid %d)", url, pid)
                return url
            last_error = "not started"
            for _ in range(3):  # a free port can be taken before the server binds it
                port = _free_port()
                command = self._command(port)
                url = f"redis://127.0.0.1:{port}/0"
                if self._launch(command, url):
                    self.url, self.pid = url, self._proc.pid if self._proc else None
                    self.owned = True
                    _write(self.state_dir / URL_FILE, url + "\n")
                    _write(self.state_dir / PID_FILE, f"{self.pid}\n")
                    _write(self.state_dir / OWNER_FILE, f"{os.getpid()}\n")
                    log.info("bus: embedded server %s at %s", Path(command[0]).name, url)
                    return url
                last_error = f"{Path(command[0]).name} exited with {self._exit_code()}"
            raise ServerStartFailed(
                f"could not start an embedded Redis server in {self.state_dir}: {last_error} "
                f"(see {self.state_dir / 'redis.log'}, or set REDIS_URL)",
                command,
            )

    def _launch(self, command: list[str], url: str) -> bool:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # so `-m bus.fakeserver` imports
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self.state_dir / "redis.log", "ab") as out:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,  # outlives a kill -9 of its owner (see module doc)
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if reachable(url, timeout=0.5):
                return True
            time.sleep(0.02)  # waiting for a child process to bind its port
        self._terminate()
        return False

    def _exit_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def _read_pid(self, name: str) -> int | None:
        try:
            return int((self.state_dir / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _terminate(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        elif self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # not our child: no wait() to block on
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Terminate the server (if this object owns it) and remove its records."""
        if self.url is None:
            return
        with self._locked():
            if self.owned:
                self._terminate()
                if recorded_url(self.project_dir) == self.url:
                    for name in (URL_FILE, PID_FILE, OWNER_FILE):
                        (self.state_dir / name).unlink(missing_ok=True)
            self.url = self.pid = None
            self.adopted = self.owned = False
