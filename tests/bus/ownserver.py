"""A plain `redis-server` of a test's own on a free port, which the test can stop and
start again (same port) or read `INFO commandstats` / `CLIENT LIST` of without any
other client's traffic mixed in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from infra.embedded import reachable
from tests.bus.protected import _free_port, need_redis_server
from tests.conftest import wait_until


class OwnRedis:
    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        """`persistent`: an append-only file (fsync always) in `workdir`, so that a
        restart finds the stream, the groups and the ledger again."""
        need_redis_server()
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.persistent = persistent

    def start(self) -> OwnRedis:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        wait_until(self._up, timeout=15)
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
        return reachable(self.url, timeout=0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def admin(self) -> redis.Redis:
        """A client for INFO / CLIENT LIST (the caller closes it)."""
        return redis.Redis.from_url(self.url, protocol=2, decode_responses=True)
