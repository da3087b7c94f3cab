"""The agent's sandbox: bubblewrap (`bwrap`) namespaces around every agent process.

Inside the sandbox (DESIGN.md invariant 8, issue 9 item 1):

- the whole filesystem is visible read-only (`--ro-bind / /`), so tools keep working;
- writable: the loop's work tree, a private `TMPDIR` (fresh for each run), the agent's
  own config dir where its runner needs one (`claude`: `$CLAUDE_CONFIG_DIR`, else
  `~/.claude` and `~/.claude.json`), and the operator's `sandbox.writable` paths;
- hidden (an empty read-only tmpfs over them): the operator's checkout and the
  project's state directory (`.loops/`: Redis URL, tokens, state, logs, other loops'
  work trees), and the credentials in the home directory (`SECRET_HOME_PATHS`:
  `~/.ssh`, `~/.aws`, `~/.config/gh`, `~/.git-credentials`, ...) and the sockets of
  the user's agents (ssh-agent, gpg-agent, the runtime dir). Inside them, only
  what the agent's git needs is visible again, read-only: the object store and the
  loop's private git dir (and whatever `sandbox.readable` lists);
- its own PID namespace with `--die-with-parent`: when the run ends, times out, is
  cancelled, or the supervisor dies, every process the agent started dies with it,
  `setsid` and double-forked children included;
- network: on unless `sandbox.network` is false (`--unshare-net`).

`sandbox.mode` (or `LOOPS_SANDBOX`): `auto` (default) sandboxes where bwrap is on PATH
and starts, and otherwise runs the agent as it is with a one-line warning; `off`
turns it off with a warning; `required` refuses to run without it
(`SandboxUnavailable`). `sandbox_status()` is the line the CLI shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events import ConfigError

__all__ = [
    "SandboxConfig",
    "SandboxMode",
    "SandboxPolicy",
    "SandboxStatus",
    "SandboxUnavailable",
    "find_bwrap",
    "sandbox_status",
]

log = logging.getLogger("loops.sandbox")

ENV_MODE = "LOOPS_SANDBOX"
ENV_WRITABLE = "LOOPS_SANDBOX_WRITABLE"
ENV_READABLE = "LOOPS_SANDBOX_READABLE"
ENV_PASSTHROUGH = "LOOPS_SANDBOX_ENV"
PROBE_TIMEOUT_S = 10.0
# Credentials in the home directory, hidden from the agent like the state directory
# (`sandbox.readable` shows one again): keys and tokens of git hosts, clouds, registries.
SECRET_HOME_PATHS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",  # git credential-store's other file
    ".cache/git/credential",  # git credential-cache's socket: it answers anyone who asks
    ".git-credential-cache",
    ".pgpass",
    ".pypirc",
    ".npmrc",
)


class SandboxUnavailable(ConfigError):
    """Raised when `sandbox: required` is set and bwrap is missing or cannot start."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"sandbox required but unavailable: {reason}; install bubblewrap "
            f"(apt-get install bubblewrap) or set {ENV_MODE}=auto"
        )
        self.reason = reason


class SandboxMode(StrEnum):
    """Whether agents run in the sandbox."""

    AUTO = "auto"  # where bwrap works; else run with a warning
    OFF = "off"  # never (warned)
    REQUIRED = "required"  # refuse to run an agent without it


class SandboxConfig(BaseModel):
    """`sandbox` of config.json: what a loop's agent may see, write and reach.

    A bare string is the mode: `"sandbox": "off"`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SandboxMode = Field(
        default=SandboxMode.AUTO,
        description="auto (bwrap where available, else a warning), off, or required; "
        "LOOPS_SANDBOX overrides it",
    )
    network: bool = Field(
        default=True, description="false: the agent has no network at all (--unshare-net)"
    )
    writable: list[str] = Field(
        default_factory=list,
        description="extra paths the agent may write (absolute, ~/..., or relative to the "
        "project); LOOPS_SANDBOX_WRITABLE adds colon-separated paths",
    )
    readable: list[str] = Field(
        default_factory=list,
        description="paths to show read-only even where hidden (inside the checkout or "
        ".loops/, or credentials such as ~/.ssh); LOOPS_SANDBOX_READABLE adds "
        "colon-separated paths",
    )
    env: list[str] = Field(
        default_factory=list,
        description="environment variables (names or globs) passed to the agent beyond "
        "the allow-list (PATH, HOME, locale, proxies, its model's credentials); "
        "LOOPS_SANDBOX_ENV adds comma-separated ones. Never REDIS_*, LOOPS_* or git redirects",
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"mode": value}
        return value


@dataclass(frozen=True)
class SandboxStatus:
    """Whether agents will run sandboxed here; `warning` is the one line to show (in
    `loops up`, `loops run`, `loops status`) when they will not, else None."""

    mode: SandboxMode
    active: bool
    bwrap: str | None
    warning: str | None


def find_bwrap(environ: Mapping[str, str] | None = None) -> str | None:
    """The `bwrap` on PATH (of `environ`, default os.environ), or None."""
    env = os.environ if environ is None else environ
    return shutil.which("bwrap", path=env.get("PATH", os.defpath))


_probes: dict[str, str | None] = {}
_probe_lock = threading.Lock()
_warned: set[str] = set()


def _probe(bwrap: str) -> str | None:
    """None when `bwrap` can build our sandbox here, else why not (once per process)."""
    with _probe_lock:
        if bwrap not in _probes:
            argv = [bwrap, *_BASE, "--", "true"]
            try:
                proc = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=PROBE_TIMEOUT_S,
                    stdin=subprocess.DEVNULL,
                )
                err = None if proc.returncode == 0 else _last_line(proc.stderr, proc.returncode)
            except (OSError, subprocess.TimeoutExpired) as exc:
                err = f"{bwrap} does not start ({exc})"
            _probes[bwrap] = err
        return _probes[bwrap]


def _warn_once(message: str) -> None:
    with _probe_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning("%s", message)


def _mode(config: SandboxConfig | None, environ: Mapping[str, str]) -> SandboxMode:
    raw = environ.get(ENV_MODE, "").strip().lower()
    if raw:
        try:
            return SandboxMode(raw)
        except ValueError:
            raise ConfigError(f"{ENV_MODE}={raw!r}: use auto, off or required") from None
    return config.mode if config is not None else SandboxMode.AUTO


def sandbox_status(
    config: SandboxConfig | None = None, environ: Mapping[str, str] | None = None
) -> SandboxStatus:
    """Whether agents will be sandboxed with this config and environment, and the
    one-line warning to print when they will not (`loops up`, `loops run`, `status`).
    Raises nothing: a `required` sandbox that is missing gets its warning too."""
    env = os.environ if environ is None else environ
    try:
        mode = _mode(config, env)
    except ConfigError as exc:
        return SandboxStatus(SandboxMode.AUTO, False, None, str(exc))
    if mode is SandboxMode.OFF:
        return SandboxStatus(
            mode,
            False,
            None,
            f"the agent sandbox is off ({ENV_MODE}=off or sandbox: off): agents "
            "see the whole checkout and the project's state directory",
        )
    bwrap = find_bwrap(env)
    reason = "bwrap (bubblewrap) is not on PATH" if bwrap is None else _probe(bwrap)
    if reason is None:
        return SandboxStatus(mode, True, bwrap, None)
    what = "agents will not run" if mode is SandboxMode.REQUIRED else "agents run unsandboxed"
    return SandboxStatus(mode, False, bwrap, f"{reason}: {what}")


# Always: a read-only view of everything, our own /dev and /proc, PID namespace, and
# death with the supervisor. `--new-session` keeps the agent off our terminal.
_BASE = (
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--unshare-pid",
    "--die-with-parent",
    "--new-session",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """How one loop's agent runs: the config with environment overrides applied, and
    the paths the harness hides (`hidden`) and shows again read-only (`readable`)."""

    mode: SandboxMode = SandboxMode.AUTO
    network: bool = True
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    env: tuple[str, ...] = ()  # passthrough names/globs for the agent's environment
    tmp_root: Path | None = None  # where private TMPDIRs go (inside a hidden dir)
    environ: Mapping[str, str] | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        config: SandboxConfig | None = None,
        *,
        base: Path | None = None,
        hidden: Iterable[Path] = (),
        readable: Iterable[Path] = (),
        tmp_root: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SandboxPolicy:
        """The policy of `config` with LOOPS_SANDBOX* of `environ` (default os.environ)
        applied. Relative paths are taken from `base` (the project directory)."""
        env = os.environ if environ is None else environ
        cfg = config or SandboxConfig()
        writable = [*cfg.writable, *_split_paths(env.get(ENV_WRITABLE, ""))]
        extra_readable = [*cfg.readable, *_split_paths(env.get(ENV_READABLE, ""))]
        names = [*cfg.env, *re.split(r"[\s,:]+", env.get(ENV_PASSTHROUGH, "").strip())]
        home = Path(env.get("HOME") or Path.home())
        secrets = [home / p for p in SECRET_HOME_PATHS] + _agent_sockets(env)
        return cls(
            mode=_mode(cfg, env),
            network=cfg.network,
            writable=tuple(_path(p, base) for p in writable),
            readable=(*(Path(p) for p in readable), *(_path(p, base) for p in extra_readable)),
            hidden=tuple(Path(p).absolute() for p in (*hidden, *secrets)),
            env=tuple(n for n in names if n),
            tmp_root=tmp_root,
            environ=environ,
        )

    def status(self) -> SandboxStatus:
        return sandbox_status(SandboxConfig(mode=self.mode), self._environ())

    def _environ(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def check(self) -> None:
        """Raise `SandboxUnavailable` if the mode is `required` and bwrap cannot run;
        otherwise log the status's warning (once per process), if any."""
        status = self.status()
        if self.mode is SandboxMode.REQUIRED and not status.active:
            raise SandboxUnavailable(_reason(status))
        if status.warning:
            _warn_once(status.warning)

    def wrap(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Iterable[Path] = (),
    ) -> list[str]:
        """`argv` as it runs in the sandbox, with `cwd` and `writable` (the work tree,
        the run's TMPDIR, the runner's config dir) writable. Unchanged when the
        sandbox is off or unavailable (warned once); `SandboxUnavailable` when it is
        required and cannot run."""
        status = self.status()
        if not status.active or status.bwrap is None:
            if self.mode is SandboxMode.REQUIRED:
                raise SandboxUnavailable(_reason(status))
            if status.warning:
                _warn_once(status.warning)
            return list(argv)
        args = [status.bwrap, *_BASE]
        if not self.network:
            args.append("--unshare-net")
        hidden = _outermost(p for p in self.hidden if p.exists())

        def inside_hidden(path: Path) -> bool:
            return any(path.absolute().is_relative_to(h) for h in hidden)

        def extra(inside: bool) -> list[str]:
            out: list[str] = []
            for path in self.readable:
                if inside_hidden(path) == inside:
                    out += ["--ro-bind-try", str(path), str(path)]
            for path in self.writable:
                if inside_hidden(path) == inside:
                    out += ["--bind-try", str(path), str(path)]
            return out

        # Mount order is the policy: the operator's paths outside the hidden ones first
        # (one may hold the checkout: it is covered again right after), then the hidden
        # paths, then what is shown again inside them (the object store, this loop's git
        # dir, listed paths inside), last the work tree and the run's own paths.
        args += extra(inside=False)
        for path in hidden:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
        args += extra(inside=True)
        for path in (cwd, *writable):
            args += ["--bind", str(path), str(path)]
        for path in hidden:
            if path.is_dir():
                args += ["--remount-ro", str(path)]
        args += ["--chdir", str(cwd), "--", *argv]
        return args


def _agent_sockets(env: Mapping[str, str]) -> list[Path]:
    """Where the user's agents listen: `$SSH_AUTH_SOCK` and every `/tmp/ssh-*` of ours
    (ssh-agent), the runtime dir (`$XDG_RUNTIME_DIR`, `/run/user/<uid>`: gpg-agent,
    keyrings, the session bus that starts programs outside the sandbox). A socket on a
    read-only mount still answers, so they are hidden, not just read-only."""
    found = [Path(env[name]) for name in ("SSH_AUTH_SOCK", "XDG_RUNTIME_DIR") if env.get(name)]
    found.append(Path("/run/user") / str(os.getuid()))
    with contextlib.suppress(OSError):
        for path in Path("/tmp").glob("ssh-*"):
            with contextlib.suppress(OSError):
                if path.is_dir() and path.stat().st_uid == os.getuid():
                    found.append(path)
    return found


def _reason(status: SandboxStatus) -> str:
    if status.warning is None:
        return "unknown"
    return status.warning.rsplit(": agents", 1)[0]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Each path once, without those inside another one, parents first."""
    ordered = sorted({p.absolute() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def _split_paths(value: str) -> list[str]:
    return [p for p in value.split(":") if p.strip()]


def _path(value: str, base: Path | None) -> Path:
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.absolute()


def _last_line(text: str, code: int) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return f"bwrap cannot start here ({lines[-1] if lines else f'exit {code}'})"
