"""The operator's commands run as real subprocesses against the real Redis, each test
under a key prefix of its own (`LOOPS_PREFIX`)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bus import BusSettings, RedisBus
from tests.conftest import require_real_redis

LOOPS = str(Path(sys.executable).with_name("loops"))


@dataclass
class System:
    """A prefix on the real Redis that the test publishes to and `loops` reads."""

    url: str
    prefix: str
    bus: RedisBus
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def loops(
        self, *args: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `loops ARGS --redis URL` and return the finished process."""
        proc = subprocess.run(
            [LOOPS, *args, "--redis", self.url],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start `loops ARGS --redis URL` with stdout piped, line-buffered."""
        return subprocess.Popen(
            [LOOPS, *args, "--redis", self.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    url = require_real_redis()
    prefix = f"test-cli-{uuid.uuid4().hex[:10]}"
    bus = RedisBus.from_settings(BusSettings.from_dsn(url, prefix=prefix))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LOOPS_PREFIX")}
    env["LOOPS_PREFIX"] = prefix
    env["PYTHONUNBUFFERED"] = "1"
    try:
        yield System(url=url, prefix=prefix, bus=bus, cwd=tmp_path, env=env)
    finally:
        bus.delete_all()
        bus.close()
