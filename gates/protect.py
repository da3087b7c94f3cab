"""Protected paths: what a claim must not change, judged by what changed, never by how a
check command is spelled.

A path is protected when it exists on main and matches a protected glob (the tests and
checks directories, spec and state files, build and test-runner configuration), or when
a check command names it. Modifying or deleting a protected file is a tamper; adding a
new file is not (an agent may add tests), except a file whose mere presence changes what
an existing check runs (a new `conftest.py`, a `pytest.ini` that shadows
`pyproject.toml`, a `GNUmakefile` in front of the `Makefile`, a package `tests/check_x/`
in front of the module `tests/check_x.py`).

Globs: a pattern without `/` matches a file name at any depth (`conftest.py`); a pattern
with `/` matches the whole path from the repository root, where `**` stands for any
number of directories (`**/tests/**` is every file under any `tests/` directory) and `*`
for part of one name.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from infra.git import run_git

DEFAULT_PROTECTED: tuple[str, ...] = (
    # the tests and checks directories, at the root or anywhere below
    "**/tests/**",
    "**/test/**",
    "**/checks/**",
    # spec and state files (the gate reads criteria from them; the harness writes them)
    "SPEC.yaml",
    "SPEC.yml",
    "test-state.json",
    "config.json",
    "health.json",
    "project.json",
    ".loops/**",
    # what decides how a check command runs
    "Makefile",
    "makefile",
    "GNUmakefile",
    "*.mk",
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "tox.ini",
    "noxfile.py",
    "package.json",
)

# New files that change what an existing check runs by being there, or that the
# harness would read criteria from once they are on main.
SHADOWING_NAMES = frozenset(
    {
        "SPEC.yaml",
        "SPEC.yml",
        "test-state.json",
        "project.json",
        "conftest.py",
        "pytest.ini",
        ".pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "noxfile.py",
        "Makefile",
        "makefile",
        "GNUmakefile",
        "package.json",
        "sitecustomize.py",
        "usercustomize.py",
    }
)


_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _translate(pattern: str) -> str:
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    if "/" not in pattern:
        pattern = "**/" + pattern
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for all of `patterns` (a tree may hold 100k files)."""
    parts = [f"(?:{_translate(p)})" for p in patterns if p.strip()]
    return re.compile("(?:" + "|".join(parts) + r")\Z") if parts else None


def matches(path: str, patterns: Iterable[str]) -> bool:
    """True when `path` (relative, `/`-separated) matches one of the globs."""
    regex = _compile(tuple(patterns))
    return bool(regex and regex.match(path))


@dataclass(frozen=True)
class Change:
    """One entry of `git diff --name-status --no-renames`: A, M, D or T and a path."""

    status: str
    path: str


def changes(
    repo: Path | str, base: str, commit: str, *, since_merge_base: bool = True
) -> list[Change]:
    """What `commit` changed against `base` (against their merge base by default: the
    claim's own changes). Renames are a delete and an add."""
    spec = f"{base}...{commit}" if since_merge_base else f"{base}..{commit}"
    out = run_git(repo, "diff", "--name-status", "--no-renames", "-z", spec).stdout
    parts = out.split("\0")
    found = []
    for status, path in zip(parts[0::2], parts[1::2], strict=False):
        if status and path:
            found.append(Change(status[0], path))
    return found


def tree_files(repo: Path | str, rev: str) -> list[str]:
    """Every file path in the tree of `rev`."""
    out = run_git(repo, "ls-tree", "-r", "-z", "--name-only", rev).stdout
    return [p for p in out.split("\0") if p]


def _tokens(command: str) -> Iterable[str]:
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    for token in tokens:
        for part in token.split("="):
            part = part.split("::", 1)[0].strip().rstrip(";")
            if part and not part.startswith("-") and part not in {".", "./"}:
                yield str(PurePosixPath(part)) if not part.startswith("/") else part
                if _MODULE.match(part):  # `python -m tests.check_x`
                    yield part.replace(".", "/") + ".py"
                    yield part.replace(".", "/")


def named_paths(commands: Sequence[str], files: Iterable[str]) -> set[str]:
    """The files of `files` that a check command names, itself or by its directory."""
    tokens = {t.rstrip("/") for c in commands for t in _tokens(c)}
    tokens.discard("")
    named = set()
    for path in files:
        if path in tokens or any(path.startswith(t + "/") for t in tokens):
            named.add(path)
    return named


def protected_files(
    files: Iterable[str], patterns: Sequence[str], commands: Sequence[str] = ()
) -> set[str]:
    """The files of a tree (`files`, e.g. `tree_files(repo, main)`) that are protected."""
    files = list(files)
    regex = _compile(tuple(patterns))
    found = {p for p in files if regex and regex.match(p)}
    return found | named_paths(commands, files)


def _shadows(path: str, protected: set[str]) -> bool:
    """A new file that changes what an existing check runs by being there."""
    name = PurePosixPath(path).name
    if name in SHADOWING_NAMES or name.endswith(".pth"):
        return True
    parts = PurePosixPath(path).parts
    for i in range(1, len(parts)):  # a package directory in front of a protected module
        if "/".join(parts[:i]) + ".py" in protected:
            return True
    # an extension module (or bytecode) next to a protected module is imported first
    pure = PurePosixPath(path)
    stem = str(pure.parent / pure.name.split(".", 1)[0])
    return pure.suffix in (".so", ".pyd", ".pyc") and f"{stem}.py" in protected


def flagged_files(changed: Sequence[Change], protected: set[str]) -> list[str]:
    """The tampering in `changed`: protected files (of main) modified or deleted, and new
    files that shadow what a check runs. Other new files are fine."""
    flagged = set()
    for change in changed:
        if change.status == "A":
            if _shadows(change.path, protected):
                flagged.add(change.path)
        elif change.path in protected:
            flagged.add(change.path)
    return sorted(flagged)


def restore(wt: Path, rev: str, paths: Iterable[str], remove: Iterable[str] = ()) -> list[str]:
    """Lay `rev`'s version of each of `paths` over the checkout `wt` (a deleted file comes
    back, an edited one is reverted), and delete the files of `remove` (new files that
    shadow what a check runs: `rev` has none); returns the paths restored."""
    root = wt.resolve()
    for rel in remove:
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or target == root:
            continue
        target.unlink(missing_ok=True)
        for parent in target.parents:  # a shadowing package leaves no directory behind
            if parent == root or any(parent.iterdir()):
                break
            parent.rmdir()
    wanted = sorted(set(paths))
    if not wanted:
        return []
    listing = "\0".join(wanted) + "\0"
    run_git(
        wt,
        "--literal-pathspecs",
        "checkout",
        rev,
        "--pathspec-from-file=-",
        "--pathspec-file-nul",
        input=listing,
    )
    return wanted
