"""Reads docker-compose.yml the way an engine would, and translates a service into a
local process: the engine's part of `docker compose up`, for machines without one.

Interpolation covers the forms the file uses (`${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?message}`, `$$`); `test_compose.py` checks the result
against `docker-compose config` where that binary exists.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BIN = Path(sys.executable).parent
CONTAINER_REPO = "/repo"
CONTAINER_HOME = "/home/loops"  # the image's HOME (Dockerfile), e.g. the agents' LOOPS_AGENT_HOME
CONTAINER_REDIS_URL = "redis://redis:6379/0"
# The compose network's Redis, with or without a password in the URL (RQ_REDIS_URL).
_CONTAINER_REDIS = re.compile(r"redis://(?::[^@/]*@)?redis:6379/0")
# What a user exports before `docker compose up` (the file refuses to start without it).
HOST_ENV = {"LOOPS_REDIS_PASSWORD": "password-from-the-environment"}

_VAR = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


class MissingVariable(ValueError):
    """Raised when a `${VAR:?message}` variable is unset, as compose refuses to start."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m["dollar"]:
            return "$"
        name = m["braced"] or m["bare"]
        value = env.get(name)
        if m["op"] == ":-":
            return value or m["default"]
        if m["op"] == "-":
            return m["default"] if value is None else value
        if m["op"] in (":?", "?"):
            if (value is None) or (m["op"] == ":?" and not value):
                raise MissingVariable(f"{name}: {m['default']}")
            return value
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load(env: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors merged and variables interpolated from `env`
    (default: `HOST_ENV`, the required ones, so every default applies)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a mapping"
    tree: dict[str, Any] = _interpolate_tree(data, HOST_ENV if env is None else env)
    return tree


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(item) for item in value]


def environment(spec: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping; None means "passed through from the host"."""
    raw = spec.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.partition("=") for item in raw]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {str(k): (None if v is None else str(v)) for k, v in raw.items()}


@dataclass
class Service:
    name: str
    spec: dict[str, Any]

    @property
    def entrypoint(self) -> list[str]:
        """The entrypoint; our image's is `loops`, another image's its own (empty)."""
        return _as_list(self.spec.get("entrypoint")) or (["loops"] if "build" in self.spec else [])

    @property
    def command(self) -> list[str]:
        return _as_list(self.spec.get("command"))

    @property
    def healthcheck(self) -> list[str]:
        """The health check as an argv (the `CMD` form)."""
        test = _as_list((self.spec.get("healthcheck") or {}).get("test"))
        assert test and test[0] == "CMD", f"{self.name}: health check must use the CMD form"
        return test[1:]

    @property
    def is_ours(self) -> bool:
        """Built from this repository's Dockerfile (every service but Redis)."""
        return "build" in self.spec

    def stop_grace_s(self) -> float:
        text = str(self.spec.get("stop_grace_period", "10s"))
        total = 0.0
        for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text):
            total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return total


def services(tree: Mapping[str, Any]) -> list[Service]:
    return [Service(name, spec) for name, spec in tree["services"].items()]


@dataclass
class Local:
    """How to run a service's command (and its health check) on this machine.

    `password` is what the user exported as `LOOPS_REDIS_PASSWORD` (the Redis at
    `redis_url` requires it), None for a Redis without one. `home` stands for the
    image's HOME (default: a directory beside the repository), so nothing a service
    keeps there (the agents' clones) lands in this machine's /home."""

    repo: Path
    redis_url: str
    prefix: str
    port: int
    password: str | None = None
    home: Path | None = None

    def _redis(self, match: re.Match[str]) -> str:
        if not self.password:
            return self.redis_url
        return self.redis_url.replace("redis://", f"redis://:{self.password}@", 1)

    def _arg(self, arg: str) -> str:
        arg = _CONTAINER_REDIS.sub(self._redis, arg)
        if arg == CONTAINER_REPO or arg.startswith(CONTAINER_REPO + "/"):
            arg = str(self.repo) + arg[len(CONTAINER_REPO) :]
        elif arg == CONTAINER_HOME or arg.startswith(CONTAINER_HOME + "/"):
            home = self.home or self.repo.parent / "home"
            arg = str(home) + arg[len(CONTAINER_HOME) :]
        return arg

    def argv(self, args: list[str]) -> list[str]:
        """`args` with the program taken from this venv, the repository and Redis
        translated, `--port` moved to a free local port and `--host` to loopback."""
        out = [self._arg(a) for a in args]
        program = shutil.which(out[0], path=str(BIN))
        assert program, f"{out[0]} is not installed in {BIN}"
        out[0] = program
        for i, arg in enumerate(out[:-1]):
            if arg == "--port":
                out[i + 1] = str(self.port)
            elif arg == "--host":
                out[i + 1] = "127.0.0.1"
        return out

    def env(self, service: Service, base: Mapping[str, str]) -> dict[str, str]:
        """The host environment (without secrets or our own settings) plus the
        service's, translated. Pass-through variables stay unset (no real key leaks
        into a test), but for the Redis password the user exported."""
        env = {
            k: v
            for k, v in base.items()
            if not k.startswith(("ANTHROPIC_", "LOOPS_", "CODING_LOOP_", "RQ_"))
            and k != "REDIS_URL"
        }
        for key, value in environment(service.spec).items():
            if value is not None:
                env[key] = self._arg(value)
            elif key == "LOOPS_REDIS_PASSWORD" and self.password:
                env[key] = self.password
        env["LOOPS_PREFIX"] = self.prefix
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        return env

    def cwd(self, service: Service) -> Path:
        return Path(self._arg(str(service.spec.get("working_dir", CONTAINER_REPO))))
