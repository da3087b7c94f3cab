"""A real Docker engine for the compose end-to-end test: `scripts/docker-engine.sh`
starts a private dockerd (its own socket, data and exec roots under a cache directory)
with stand-ins for the base images, and stops it afterwards.

`Engine.start()` returns None with the reason when no engine can run here (not root,
no dockerd, a kernel without overlayfs, ...): the test skips with that reason, and
fails under CI=true.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "docker-engine.sh"
DEFAULT_CACHE = Path("/var/cache/coding-loops-docker")
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
START_TIMEOUT_S = 1200  # debootstrap and the stand-ins on a cold cache: a few minutes


@dataclass
class Engine:
    """The private engine: its cache directory, and whether this process started it
    (then `stop()` stops it again; an engine someone else started is left running)."""

    cache: Path = field(
        default_factory=lambda: Path(os.environ.get("LOOPS_DOCKER_CACHE") or DEFAULT_CACHE)
    )
    started_here: bool = False

    @property
    def host(self) -> str:
        return f"unix://{self.cache}/docker.sock"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(DOCKER_HOST=self.host, DOCKER_BUILDKIT="0", LOOPS_DOCKER_CACHE=str(self.cache))
        return env

    def _script(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def alive(self) -> bool:
        return self._script("status", 60).returncode == 0

    def start(self) -> str | None:
        """Start (or reuse) the engine; None when it runs, else why it cannot."""
        if os.geteuid() != 0:
            return "the private dockerd needs root"
        was_alive = self.alive()
        try:
            proc = self._script("start", START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            return f"scripts/docker-engine.sh start took over {START_TIMEOUT_S}s"
        if proc.returncode != 0:
            self.started_here = not was_alive
            self.stop()
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
            return f"dockerd cannot start here (exit {proc.returncode}): " + " | ".join(tail)
        self.started_here = not was_alive
        return None

    def stop(self) -> None:
        if self.started_here:
            self._script("stop", 120)
            self.started_here = False

    def leftovers(self) -> list[str]:
        """Processes still running from this engine's directory (dockerd, containerd,
        shims, containers' docker-proxy)."""
        out = subprocess.run(
            ["pgrep", "-af", str(self.cache)], capture_output=True, text=True, timeout=30
        )
        return [line for line in out.stdout.splitlines() if "pgrep" not in line]

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [DOCKER, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr or proc.stdout}"
        return proc
