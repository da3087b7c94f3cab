"""The embedded default: with no Redis URL, coding-loops starts and owns a
Redis-compatible server on 127.0.0.1, and records its URL in the project's state
directory (`DIR/.loops/redis.url`, with `redis.pid`), so that `loops status`,
`loops events` and `loops answer` in another terminal reach the same state.

A `redis-server` binary on PATH is preferred: no RDB snapshots, an append-only file
(fsync every second) under `DIR/.loops/redis`, so that the next `loops up` resumes
with the stream, the consumer groups and open escalations. Without one, fakeredis's
TCP server runs in a subprocess (`python -m infra.fakeserver --port N`): correct, but
memory only, and every pipeline costs it ~44 ms.
The server runs in its own session, so it outlives a `kill -9` of its owner; the
next `EmbeddedServer.start()` in that directory adopts it, state intact.
`DIR/.loops/redis.owner` holds the pid of the process that stops it.

Credentials (invariant 8): the server refuses every client that has not logged in
as the ACL user `loops` (the `default` user is off). Its password is in
`DIR/.loops/redis.auth` and the key events are signed with in `DIR/.loops/signing.key`,
both mode 0600, created on the first start and kept (the AOF keeps signed events
across runs, so the key must outlive the server). `redis.url` holds no secret
(`redis://loops@127.0.0.1:PORT/0`): whoever can read `.loops/` (the operator; never an
agent, whose sandbox hides the directory) reads the password from its own file.
`EmbeddedServer.settings()` and `recorded_settings(DIR)` put the three together. The
password reaches `redis-server` on its stdin (config `-`) and the fakeredis fallback
through the file, never on a command line.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import redis

from bus.settings import BusSettings, connect, parse_signing_key, redact_url, url_password
from events import ConfigError, LoopsError
from events.secrets import register_secret
from infra.files import FileLock, write_text_atomic
from infra.process import pid_alive

log = logging.getLogger("loops.bus")

STATE_DIR = ".loops"
URL_FILE = "redis.url"
PID_FILE = "redis.pid"
OWNER_FILE = "redis.owner"  # pid of the process that stops the server when it is done
AUTH_FILE = "redis.auth"  # the password of the ACL user USER (mode 0600)
KEY_FILE = "signing.key"  # the key events are signed with, hex (mode 0600)
USER = "loops"
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


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    register_secret(text)
    return text or None


def recorded_password(project_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The embedded server's password (`DIR/.loops/redis.auth`), if readable."""
    return _read_secret(state_dir(project_dir) / AUTH_FILE)


def recorded_signing_key(project_dir: str | os.PathLike[str] | None = None) -> bytes | None:
    """The project's event signing key (`DIR/.loops/signing.key`), if readable."""
    text = _read_secret(state_dir(project_dir) / KEY_FILE)
    return parse_signing_key(text) if text else None


def ensure_credentials(directory: Path) -> tuple[str, bytes]:
    """The password and signing key of the project whose state dir is `directory`,
    created (random, mode 0600) when missing; a file another user could read is made
    private again. Call under the state dir's lock."""
    for name in (AUTH_FILE, KEY_FILE):
        path = directory / name
        if path.exists() and path.stat().st_mode & 0o077:
            log.warning("bus: %s was readable by others; made it private (0600)", path)
            path.chmod(0o600)
    password = _read_secret(directory / AUTH_FILE)
    if not password:
        password = secrets.token_urlsafe(32)
        write_text_atomic(directory / AUTH_FILE, password + "\n", mode=0o600)
        register_secret(password)
    key_text = _read_secret(directory / KEY_FILE)
    if not key_text:
        key_text = secrets.token_hex(32)
        write_text_atomic(directory / KEY_FILE, key_text + "\n", mode=0o600)
        register_secret(key_text)
    return password, parse_signing_key(key_text)


def _same_server(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.hostname, pa.port, pa.path or "/0") == (pb.hostname, pb.port, pb.path or "/0")


def reachable(url: str, timeout: float = 1.0, password: str | None = None) -> bool:
    """Whether a Redis at `url` answers PING within `timeout` seconds (logging in with
    `password` when given)."""
    client = connect(
        BusSettings(
            url=url,
            block_ms=0,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            password=password,
        )
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def resolve_url(
    explicit_url: str | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The Redis to use: `--redis URL`, else `REDIS_URL` of `env`, else the running
    embedded server of `project_dir`. `ConfigError` when there is none."""
    return resolve_settings(explicit_url, project_dir, env).url


def recorded_settings(
    project_dir: str | os.PathLike[str] | None = None, **overrides: Any
) -> BusSettings | None:
    """Settings for the embedded server `project_dir` recorded (URL, password, key),
    or None when there is no record (the server may be gone: check `reachable`)."""
    url = recorded_url(project_dir)
    if not url:
        return None
    overrides.setdefault("password", recorded_password(project_dir))
    overrides.setdefault("signing_key", recorded_signing_key(project_dir))
    return BusSettings.from_dsn(url, **overrides)


def resolve_settings(
    explicit_url: str | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> BusSettings:
    """How to reach the running system, credentials included, with nothing typed
    (`env` holds the variables, from `infra.settings.Settings.bus_env()`; none when
    not given):

    - `--redis URL`, else `$REDIS_URL`: its password is the URL's or
      `$LOOPS_REDIS_PASSWORD`; the key `$LOOPS_SIGNING_KEY` or derived from the
      password. A URL naming the embedded server of `project_dir` (`--redis` copied
      from `loops status`) takes that server's password and key from `.loops/`;
    - else the embedded server of `project_dir`, if it answers.

    `ConfigError` when there is none. `overrides` are `BusSettings` fields."""
    env = {} if env is None else env
    url = explicit_url or env.get("REDIS_URL")
    if url:
        BusSettings.from_dsn(url)  # a clear error for a malformed URL
        recorded = recorded_url(project_dir)
        if (
            recorded
            and _same_server(url, recorded)
            and not url_password(url)
            and not env.get("LOOPS_REDIS_PASSWORD")
        ):
            overrides.setdefault("password", recorded_password(project_dir))
            overrides.setdefault("signing_key", recorded_signing_key(project_dir))
        return BusSettings.from_env(env, url=url, **overrides)
    settings = recorded_settings(project_dir, **overrides)
    if settings is not None and reachable(settings.url, password=settings.password):
        return settings
    shown = project_dir or "."
    where = f"in {shown}" if project_dir else "here, above here or under this repository"
    raise ConfigError(
        f"no coding-loops system is running {where} "
        f"(start one with `loops up {shown}`, or name it with --dir DIR) and REDIS_URL is not set"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        self.password: str | None = None
        self.signing_key: bytes | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settings(self, **overrides: Any) -> BusSettings:
        """`BusSettings` for this server: its URL, password and signing key (the key
        prefix `loops` unless given). Call after `start()`."""
        if self.url is None:
            raise ServerStartFailed("the embedded server is not started")
        overrides.setdefault("password", self.password)
        overrides.setdefault("signing_key", self.signing_key)
        return BusSettings.from_dsn(self.url, **overrides)

    def client_url(self) -> str:
        """The URL with the password in it, for a client that takes only a URL (a test's
        subprocess). Never write it down or print it: `url` is the one to show."""
        if self.url is None or self.password is None:
            raise ServerStartFailed("the embedded server is not started")
        parts = urlsplit(self.url)
        netloc = f"{USER}:{self.password}@{parts.hostname}:{parts.port}"
        return parts._replace(netloc=netloc).geturl()

    def _locked(self) -> FileLock:
        """The state dir's lock, between the processes that start or stop its server."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return FileLock(self.state_dir / "redis.lock")

    def _command(self, port: int) -> list[str]:
        binary = shutil.which("redis-server") if self.kind != "fakeredis" else None
        if self.kind == "redis-server" and binary is None:
            raise ServerStartFailed("redis-server is not on PATH")
        if binary:
            data = self.state_dir / "redis"
            data.mkdir(exist_ok=True)
            return [
                binary,
                "-",  # the ACL (with the password) comes on stdin, see _launch
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
        return [
            sys.executable, "-m", "infra.fakeserver",
            "--port", str(port),
            "--user", USER,
            "--auth-file", str(self.state_dir / AUTH_FILE),
        ]  # fmt: skip

    def start(self) -> str:
        """Start (or adopt) the server, record its URL and pid; returns the URL."""
        if self.url is not None:
            return self.url
        with self._locked():
            self.password, self.signing_key = ensure_credentials(self.state_dir)
            url = recorded_url(self.project_dir)
            pid = self._read_pid(PID_FILE)
            if url and pid and pid_alive(pid) and reachable(url, password=self.password):
                self.url, self.pid = url, pid
                owner = self._read_pid(OWNER_FILE)
                if owner and owner != os.getpid() and pid_alive(owner):
                    # another live process runs it (e.g. `loops up` in another
                    # terminal): use it, and leave stopping it to that process
                    log.info("bus: using the embedded server at %s (owner pid %d)", url, owner)
                    return url
                self.adopted = self.owned = True
                write_text_atomic(self.state_dir / OWNER_FILE, f"{os.getpid()}\n")
                log.info("bus: adopted the embedded server at %s (pid %d)", url, pid)
                return url
            if url and pid and pid_alive(pid) and reachable(url):
                self._replace_open_server(url, pid)
            last_error = "not started"
            for _ in range(3):  # a free port can be taken before the server binds it
                port = _free_port()
                command = self._command(port)
                url = f"redis://{USER}@127.0.0.1:{port}/0"
                if self._launch(command, url):
                    self.url, self.pid = url, self._proc.pid if self._proc else None
                    self.owned = True
                    write_text_atomic(self.state_dir / URL_FILE, url + "\n")
                    write_text_atomic(self.state_dir / PID_FILE, f"{self.pid}\n")
                    write_text_atomic(self.state_dir / OWNER_FILE, f"{os.getpid()}\n")
                    log.info(
                        "bus: embedded server %s at %s", Path(command[0]).name, redact_url(url)
                    )
                    return url
                last_error = f"{Path(command[0]).name} exited with {self._exit_code()}"
            raise ServerStartFailed(
                f"could not start an embedded Redis server in {self.state_dir}: {last_error} "
                f"(see {self.state_dir / 'redis.log'}, or set REDIS_URL)",
                command,
            )

    def _replace_open_server(self, url: str, pid: int) -> None:
        """Stop a server that answers without a password (started by a coding-loops
        from before servers had one), so that a protected one takes its place. A
        redis-server writes its append-only file as it stops, and the new one reads
        it from the same directory: the data stays. Refuses while the process that
        started it still runs (it would lose its server)."""
        owner = self._read_pid(OWNER_FILE)
        if owner and owner != os.getpid() and pid_alive(owner):
            raise ServerStartFailed(
                f"the embedded server at {url} (pid {pid}) has no password: an older "
                f"coding-loops (pid {owner}) runs it; stop that one, then start again"
            )
        log.warning("bus: the embedded server at %s had no password; restarting it with one", url)
        self.pid = pid
        self._terminate()
        self.pid = None
        for name in (URL_FILE, PID_FILE, OWNER_FILE):
            (self.state_dir / name).unlink(missing_ok=True)

    def _launch(self, command: list[str], url: str) -> bool:
        # `-m infra.fakeserver` imports from its working directory (the package's parent);
        # the server's own paths are absolute. The environment is inherited.
        root = Path(__file__).resolve().parent.parent
        redis_server = "-" in command
        with open(self.state_dir / "redis.log", "ab") as out:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if redis_server else subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=None if redis_server else root,
                start_new_session=True,  # outlives a kill -9 of its owner (see module doc)
            )
        if redis_server and self._proc.stdin is not None:
            # Only the ACL user may do anything; the default user is off (NOAUTH).
            acl = f"user default off\nuser {USER} on >{self.password} ~* &* +@all\n"
            try:
                self._proc.stdin.write(acl.encode())
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # it exited at once; poll() below says so
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if reachable(url, timeout=0.5, password=self.password):
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
        elif self.pid is not None and pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # not our child: no wait() to block on
            if pid_alive(self.pid):
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
            self.password = self.signing_key = None
