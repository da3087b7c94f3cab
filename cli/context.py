"""What every command starts from: the settings, the project, and the bus.

`main` builds the `Settings` once (`settings_of(args)` reads it back; a namespace
built by a test gets the environment's) and every command reaches the system through
`open_bus` (an operator command on a running system) or `open_system_bus` (the
process that runs the system).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import redis

from bus import BusSettings, RedisBus
from bus.settings import redact_url, warn_if_unsigned
from events import ConfigError, ValidationFailed
from events.view import clean
from infra.embedded import EmbeddedServer, state_dir
from infra.git import GitError, current_branch, git, repo_root
from infra.locate import find_project_dir
from infra.settings import Settings
from loops.project import Project, load_project

redact = redact_url  # `url` without its password, for messages


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings `main` built for this command (else the environment's)."""
    settings = getattr(args, "settings", None)
    return settings if isinstance(settings, Settings) else Settings.from_env()


# ---------------------------------------------------------------------- the project


def project_dir(arg: str | None, settings: Settings | None = None) -> Path:
    """DIR, else the `CODING_LOOP_PROJECT_DIR` setting, else `.`."""
    settings = settings or Settings.from_env()
    return Path(arg or settings.project_dir or ".").resolve()


def load_checked(directory: Path, settings: Settings | None = None) -> Project:
    """The project, or `ValidationFailed` naming every bad file: nothing starts then."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    settings = settings or Settings.from_env()
    project = load_project(directory, project_dir=settings.project_dir)
    problems = project.dependency_problems()
    if problems:
        raise ValidationFailed(problems, path=str(directory))
    return project


def repo_and_main(directory: Path, project: Project) -> tuple[Path, str]:
    """The repository holding DIR and the branch verified work merges into."""
    try:
        repo = repo_root(directory)
        git(repo, "rev-parse", "--verify", "HEAD")
    except GitError:
        raise ConfigError(
            f"{directory} is not inside a git repository with a commit: coding-loops merges "
            "verified work into a branch (git init && git add -A && git commit -m init)"
        ) from None
    wanted = {lp.config.main_branch for lp in project.loops if lp.config.main_branch}
    if len(wanted) > 1:
        raise ConfigError(f"loops disagree on main_branch ({', '.join(sorted(wanted))}): pick one")
    main = wanted.pop() if wanted else current_branch(repo)
    if main == "HEAD":
        raise ConfigError(f"{repo} is on a detached HEAD: check out the branch to merge into")
    return repo, main


# ---------------------------------------------------------------------- reaching the system


def system_dir(args: argparse.Namespace) -> str | None:
    """`--dir`, else `$CODING_LOOP_PROJECT_DIR`, else the system found from here, as git
    finds its repository (`infra.locate`: the parents, then below the repository's top)."""
    named = getattr(args, "project_dir", None) or settings_of(args).project_dir
    if named:
        return str(named)
    found = find_project_dir()
    return str(found) if found else None


def bus_settings(args: argparse.Namespace) -> BusSettings:
    """Where the running system is, and its credentials, with nothing typed: `--redis`,
    else `$REDIS_URL` (password in the URL or `$LOOPS_REDIS_PASSWORD`, signing key
    `$LOOPS_SIGNING_KEY` or derived from it), else the embedded server of the project
    in `--dir` (password and key from its `.loops/`); key prefix from `$LOOPS_PREFIX`
    (default loops)."""
    return settings_of(args).resolve_bus(getattr(args, "redis", None), system_dir(args))


def _embedded_data(project_dir: str | None) -> Path | None:
    """The project, if an embedded server of an earlier run left its data (AOF) there."""
    project = Path(project_dir or ".").resolve()
    return project if (state_dir(project) / "redis" / "appendonlydir").is_dir() else None


@contextlib.contextmanager
def open_bus(args: argparse.Namespace) -> Iterator[RedisBus]:
    """A bus on the running system, closed afterwards. Redis errors become one line.

    When no system is running but an earlier `loops run`/`loops up` of the project left
    its embedded server's data, that server is started for the length of the command
    (and stopped after), so a person can answer a question between two runs."""
    settings = settings_of(args)
    with contextlib.ExitStack() as stack:
        try:
            found = bus_settings(args)
        except ConfigError:
            project = _embedded_data(system_dir(args))
            if project is None:
                raise
            server = stack.enter_context(EmbeddedServer(project, kind="redis-server"))
            found = server.settings(prefix=settings.prefix)
        bus = stack.enter_context(RedisBus.from_settings(found))
        try:
            yield bus
        except redis.RedisError as exc:
            raise ConfigError(
                f"cannot reach Redis at {redact(found.url)} ({type(exc).__name__}: {exc}); "
                "is the system running? (--redis URL, $REDIS_URL or --dir DIR)"
            ) from None


def nothing_running(args: argparse.Namespace) -> bool:
    """True when no system of the project is running and `open_bus` would start its
    embedded server only for the command (between two `loops run`s, say)."""
    try:
        bus_settings(args)
    except ConfigError:
        return _embedded_data(system_dir(args)) is not None
    return False


@contextlib.contextmanager
def open_system_bus(
    redis_url: str | None, directory: Path, settings: Settings, *, from_env: bool = True
) -> Iterator[RedisBus]:
    """The bus of a system this process runs: `--redis`, `$REDIS_URL` (unless not
    `from_env`), or an embedded server it starts (and stops) for DIR."""
    url = redis_url or (settings.redis_url if from_env else None)
    with contextlib.ExitStack() as stack:
        if url:
            found = settings.bus_settings(url=url)
        else:
            server = stack.enter_context(EmbeddedServer(directory))
            # its password and the project's signing key
            found = server.settings(prefix=settings.prefix)
        warn_if_unsigned(found)
        bus = stack.enter_context(RedisBus.from_settings(found))
        yield bus


LOOP_TYPES = frozenset({"loop.started", "loop.heartbeat", "loop.stopped"})


def known_loops(bus: RedisBus) -> set[str]:
    """Loops that have ever shown up on the stream."""
    return {e.loop for _, e in bus.replay(types=LOOP_TYPES) if e.loop}


def require_loop(bus: RedisBus, loop: str, nothing: str) -> None:
    """`ConfigError` (`... ; nothing sent`) unless `loop` has shown up on the stream."""
    loops = known_loops(bus)
    if loop not in loops:
        names = ", ".join(sorted(loops)) or "none yet"
        raise ConfigError(
            f"no loop {clean(loop, 60)!r} on this system (loops: {names}); nothing {nothing}"
        )
