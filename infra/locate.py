"""Finding the running system from anywhere inside the repository, as git finds its
repository: what operator commands (`loops status`, `answer`, `pause`, ...) use when
neither `--dir` nor `$CODING_LOOP_PROJECT_DIR` names the project.

A system lives where its state directory is: `DIR/.loops/` of the `DIR` that
`loops up DIR` (or `loops run`, `loops worker`) was started in, holding the embedded
server's `redis.url` (its password and signing key beside it, mode 0600: they are
read from there, never copied elsewhere). From a directory `D`:

1. `D` and each parent of `D`, nearest first: a state directory whose server answers;
2. below each enclosing repository's top (the parents holding `.git`, nearest
   first), a few levels down: a server that answers, so `loops up coding-loops`
   started at the repository root is found from the root or any other directory;
3. else, in the same order, a state directory holding an earlier run's data (the
   operator command starts that server for its own length: `cli.context.open_bus`).

Two running systems under one repository and none nearer: `AmbiguousSystem`, naming
each with the `--dir` that picks it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from events import ConfigError
from infra.embedded import STATE_DIR, URL_FILE, reachable, recorded_password, recorded_url

SEARCH_DEPTH = 3
"""How far below a repository's top a project directory is looked for."""

_SKIP = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})


class AmbiguousSystem(ConfigError):
    """Raised when several running systems could be meant and none is nearer."""

    def __init__(self, top: Path, found: list[Path]) -> None:
        names = ", ".join(_shown(p) for p in found)
        super().__init__(
            f"several coding-loops systems run under {top} ({names}): "
            f"pick one with --dir, e.g. `loops status --dir {_shown(found[0])}`"
        )
        self.top = top
        self.found = found


def _shown(path: Path) -> str:
    """`path` as the person would type it from the current directory."""
    try:
        return os.path.relpath(path) if path != Path.cwd() else "."
    except ValueError:
        return str(path)


def _has_server(directory: Path) -> bool:
    return (directory / STATE_DIR / URL_FILE).is_file()


def _has_data(directory: Path) -> bool:
    return (directory / STATE_DIR / "redis" / "appendonlydir").is_dir()


def _answers(directory: Path) -> bool:
    url = recorded_url(directory)
    return url is not None and reachable(url, password=recorded_password(directory))


def _below(top: Path, depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """Directories under `top` (not `top` itself), breadth first, skipping hidden ones."""
    level = [top]
    for _ in range(depth):
        following: list[Path] = []
        for directory in level:
            try:
                children = sorted(p for p in directory.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name.startswith(".") or child.name in _SKIP:
                    continue
                yield child
                following.append(child)
        level = following


def find_project_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The project directory of the system an operator command in `start` (default: the
    current directory) means, or None when there is none (see the module's docstring)."""
    here = Path(start or ".").resolve()
    # Nothing inside a project's state directory is a project: its work trees are the
    # agents' to write, and a `.loops/` planted there must not take operator commands.
    parents = [p for p in (here, *here.parents) if STATE_DIR not in p.parts]
    tops = [p for p in parents if (p / ".git").exists()]
    for directory in parents:
        if _has_server(directory) and _answers(directory):
            return directory
    for top in tops:
        running = [d for d in _below(top) if _has_server(d) and _answers(d)]
        if len(running) > 1:
            raise AmbiguousSystem(top, running)
        if running:
            return running[0]
    for directory in parents:
        if _has_data(directory):
            return directory
    for top in tops:
        stopped = [d for d in _below(top) if _has_data(d)]
        if stopped:  # the shallowest, unless two are equally near
            shallowest = [d for d in stopped if len(d.parts) == len(stopped[0].parts)]
            return stopped[0] if len(shallowest) == 1 else None
    return None
