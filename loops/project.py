"""A project laid out like the seed's `coding-loops/`: `loop-*/config.json` and specs.

    coding-loops/
    ├── loop-1-critical-path/config.json     specs_dir: coding-loops/loop-1-critical-path/specs
    │   └── specs/test-state.json, 00-overview.md, *.md, health.json
    └── loop-2-infrastructure/ ...

A loop's name is its directory name (`loop-1-critical-path`); the config's `name` is
its display name. `specs_dir` is relative to the project root, as in the seed; it is
looked up under `$CODING_LOOP_PROJECT_DIR`, the git toplevel, the given directory and
its parent, the loop directory, and last `loop-*/specs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from events import Criterion, LoopsError, NaturalCheck, ScriptCheck, ValidationFailed
from loops.files import problem, show, typo_problems
from loops.harness import (
    PROJECT_FILE,
    LoopConfig,
    LoopState,
    ProjectConfig,
    TaskEntry,
    TaskStatus,
    load_config,
    load_health,
    load_project_config,
    load_state,
)
from loops.names import loop_name_problem
from loops.spec import load_spec

__all__ = [
    "ENV_PROJECT_DIR",
    "Loop",
    "Problems",
    "Project",
    "TaskRef",
    "UnknownTask",
    "check_loop",
    "criteria_for",
    "find_loop_dirs",
    "load_loop",
    "load_project",
    "parse_task_ref",
    "project_config_path",
    "resolve_specs_dir",
    "spec_content",
]

ENV_PROJECT_DIR = "CODING_LOOP_PROJECT_DIR"
_Model = TypeVar("_Model", bound=BaseModel)
_SKIP_DIRS = {".git", ".loops", "node_modules", ".venv", "__pycache__"}


class UnknownTask(LoopsError):
    """Raised when a loop or task named in a request is not in the files under a root."""

    def __init__(self, loop: str, task_id: str | None, root: Path) -> None:
        what = f"task '{loop}/{task_id}'" if task_id else f"loop '{loop}'"
        super().__init__(f"no {what} under {root}")
        self.loop = loop
        self.task_id = task_id
        self.root = root


# -- dependencies ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRef:
    """A task named in `dependsOn`: `TASK-ID` (same loop) or `loop-name/TASK-ID`."""

    loop: str | None
    task: str

    def __str__(self) -> str:
        return f"{self.loop}/{self.task}" if self.loop else self.task

    def in_loop(self, loop: str) -> TaskRef:
        """This reference with a same-loop reference made explicit."""
        return self if self.loop else TaskRef(loop, self.task)


def parse_task_ref(value: str) -> TaskRef:
    """`'loop-1/CP-001'` -> TaskRef('loop-1', 'CP-001'); `'CP-001'` -> TaskRef(None, ...)."""
    value = value.strip()
    loop, sep, task = value.partition("/")
    if sep and loop and task:
        return TaskRef(loop, task)
    return TaskRef(None, value)


# -- loops and the project ------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    """One loop of a project: its directory, config, specs directory and state."""

    name: str
    dir: Path
    config: LoopConfig
    specs_dir: Path
    state: LoopState

    @property
    def display_name(self) -> str:
        return self.config.name

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def state_path(self) -> Path:
        return self.specs_dir / self.config.test_state_file

    @property
    def health_path(self) -> Path:
        return self.specs_dir / self.config.health_check.file

    @property
    def transcripts_dir(self) -> Path:
        """Where the seed keeps transcripts (`specs/logs/transcripts/`)."""
        return self.specs_dir / "logs" / "transcripts"

    @property
    def branch(self) -> str:
        return self.config.branch or f"loop/{self.name}"

    def dependencies(self, entry: TaskEntry) -> list[TaskRef]:
        """The entry's dependencies, each naming its loop explicitly."""
        refs = [parse_task_ref(d).in_loop(self.name) for d in entry.dependencies]
        return [TaskRef(None, r.task) if r.loop == self.name else r for r in refs]

    def criteria(self, task_id: str) -> list[Criterion]:
        """The task's criteria; else the config's check_command; else a sign-off."""
        try:
            entry = self.state.task(task_id)
        except KeyError:
            raise UnknownTask(self.name, task_id, self.dir) from None
        return _criteria(entry, self.config)

    def spec_content(self, task_id: str, limit: int | None = None) -> str:
        return spec_content(self.specs_dir, task_id, limit)


@dataclass(frozen=True)
class Project:
    """Every loop of a coding-loops project, most urgent (lowest priority) first."""

    root: Path
    loops: tuple[Loop, ...]
    config: ProjectConfig = field(default_factory=ProjectConfig)  # project.json, if any

    def loop(self, name: str) -> Loop:
        """A loop by directory name (or, failing that, display name); `KeyError` if none."""
        for loop in self.loops:
            if loop.name == name:
                return loop
        for loop in self.loops:
            if loop.display_name == name:
                return loop
        raise KeyError(name)

    def criteria_snapshot(self) -> dict[str, list[Criterion]]:
        """Every task's criteria as the files say now, keyed `loop/TASK`: what the gate
        falls back on for a task that main does not list yet (added by hand, not yet
        committed). Read before any agent runs; main's criteria win for every task main
        knows, so an agent's edits on its branch never count."""
        return {
            f"{loop.name}/{entry.id}": loop.criteria(entry.id)
            for loop in self.loops
            for entry in loop.state.tests
        }

    def status_of(self, ref: TaskRef, from_loop: str) -> TaskStatus | None:
        """The status of a referenced task, or None if it does not exist."""
        try:
            return self.loop(ref.loop or from_loop).state.task(ref.task).status
        except KeyError:
            return None

    def dependency_problems(self) -> list[str]:
        """Dependencies on tasks that do not exist, and dependency cycles."""
        out: list[str] = []
        graph: dict[str, list[str]] = {}
        for loop in self.loops:
            for i, entry in enumerate(loop.state.tests):
                node = f"{loop.name}/{entry.id}"
                graph[node] = []
                for ref in loop.dependencies(entry):
                    full = ref.in_loop(loop.name)
                    graph[node].append(str(full))
                    if self.status_of(ref, loop.name) is not None:
                        continue
                    if ref.loop and ref.loop not in {lp.name for lp in self.loops}:
                        why = f"no loop '{show(ref.loop)}' in {self.root}"
                    else:
                        why = f"no test '{show(ref.task)}' in loop '{full.loop}'"
                    out.append(
                        problem(
                            str(loop.state_path),
                            f"tests[{i}].dependsOn",
                            f"depends on '{show(str(ref))}' but there is {why} — fix the id, "
                            "or write 'loop-name/TASK-ID' for another loop's task",
                        )
                    )
        out.extend(_cycles(graph, {lp.name: lp for lp in self.loops}))
        return out


def load_project(
    directory: str | os.PathLike[str], *, project_dir: str | os.PathLike[str] | None = None
) -> Project:
    """Load every `loop-*/config.json` under `directory`; every problem of every file.

    `project_dir` (the caller's `CODING_LOOP_PROJECT_DIR` setting, if any) is where
    `specs_dir` is looked up first.
    """
    root = Path(directory)
    loop_dirs = find_loop_dirs(root)
    if not loop_dirs:
        raise ValidationFailed(
            [
                problem(
                    str(root),
                    "",
                    "no loops found — expected loop-*/config.json (the coding-loops layout); "
                    "for a single SPEC.yaml use `loops run SPEC.yaml`",
                )
            ],
            path=str(root),
        )
    loops: list[Loop] = []
    problems: list[str] = []
    config = ProjectConfig()
    config_path = project_config_path(loop_dirs)
    if config_path.is_file():
        try:
            config = load_project_config(config_path)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    for loop_dir in loop_dirs:
        try:
            loops.append(load_loop(loop_dir, root=root, project_dir=project_dir))
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValidationFailed(problems, path=str(root))
    loops.sort(key=lambda lp: (lp.config.priority, lp.name))
    return Project(root=root, loops=tuple(loops), config=config)


def project_config_path(loop_dirs: list[Path]) -> Path:
    """Where a project's optional project.json is: next to its `loop-*` directories."""
    return loop_dirs[0].parent / PROJECT_FILE


Problems = dict[str, list[str]]
"""File -> its problems ([] = read and fine), in the order the files were read."""


def load_loop(
    loop_dir: Path,
    *,
    root: Path | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    within: Path | None = None,
    config_path: Path | None = None,
) -> Loop:
    """One loop directory: config.json (or `config_path`, the harness's `--config`), then
    its specs dir and state file. `ValidationFailed` with every problem found."""
    problems: Problems = {}
    loop = check_loop(
        loop_dir,
        problems,
        root=root,
        project_dir=project_dir,
        within=within,
        config_path=config_path,
    )
    if loop is None:
        bad = [(path, lines) for path, lines in problems.items() if lines]
        raise ValidationFailed([line for _, lines in bad for line in lines], path=bad[0][0])
    return loop


def check_loop(
    loop_dir: Path,
    problems: Problems,
    *,
    root: Path | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    within: Path | None = None,
    config_path: Path | None = None,
    strict: bool = False,
) -> Loop | None:
    """`load_loop` collecting every problem of every file into `problems` instead of
    raising: the loop, or None when it could not be read. `strict` (what `loops
    validate` asks) adds unknown fields (typos) and the loop's health.json."""
    loop_dir = Path(loop_dir)
    config_path = Path(config_path) if config_path is not None else loop_dir / "config.json"
    source = str(config_path)
    found = problems.setdefault(source, [])
    odd = loop_name_problem(loop_dir.name)
    if odd:
        found.append(problem(source, "", odd))
        return None
    try:
        config = load_config(config_path)
    except ValidationFailed as exc:
        found.extend(exc.problems)
        return None
    if strict:
        found.extend(typo_problems(config, source))
    specs = resolve_specs_dir(
        loop_dir, config.specs_dir, root=root, project_dir=project_dir, within=within
    )
    if specs is None:
        found.append(specs_missing(config_path, config.specs_dir, loop_dir))
        return None
    state = _checked(problems, specs / config.test_state_file, load_state, strict)
    health_path = specs / config.health_check.file
    if strict and health_path.exists():
        _checked(problems, health_path, load_health, strict)
    if state is None:
        return None
    return Loop(name=loop_dir.name, dir=loop_dir, config=config, specs_dir=specs, state=state)


def _checked(
    problems: Problems, path: Path, load: Callable[[Path], _Model], strict: bool
) -> _Model | None:
    """`load(path)`, its problems recorded under `path` (and its typos when `strict`)."""
    found = problems.setdefault(str(path), [])
    try:
        value = load(path)
    except ValidationFailed as exc:
        found.extend(exc.problems)
        return None
    if strict:
        found.extend(typo_problems(value, str(path)))
    return value


def specs_missing(config_path: Path, specs_dir: str, loop_dir: Path) -> str:
    """The problem of a config whose `specs_dir` is nowhere to be found."""
    return problem(
        str(config_path),
        "specs_dir",
        f"directory '{show(specs_dir)}' not found — give it relative to the project root "
        f"(or set {ENV_PROJECT_DIR}), or create {loop_dir / 'specs'}",
    )


def find_loop_dirs(root: Path) -> list[Path]:
    """`root/loop-*/config.json`; else the same one level down (`repo/coding-loops/`)."""
    found = _loop_dirs_in(root)
    if found:
        return found
    for sub in _subdirs(root):
        found = _loop_dirs_in(sub)
        if found:
            return found
    return []


def _loop_dirs_in(directory: Path) -> list[Path]:
    return [
        d for d in _subdirs(directory) if d.name.startswith("loop-") and _is_file(d, "config.json")
    ]


def _subdirs(directory: Path) -> Iterator[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return iter(())
    return (e for e in entries if e.name not in _SKIP_DIRS and _is_dir(e))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_file(directory: Path, name: str) -> bool:
    try:
        return (directory / name).is_file()
    except OSError:
        return False


def git_toplevel(start: Path) -> Path | None:
    """The nearest ancestor holding `.git` (a directory, or a worktree's file)."""
    start = start.absolute()
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def resolve_specs_dir(
    loop_dir: Path,
    specs_dir: str,
    *,
    root: Path | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    within: Path | None = None,
) -> Path | None:
    """The first existing candidate for a config's `specs_dir`, or None.

    `within`: accept only directories inside it (the gate reads a checkout of main and
    must not wander into the working tree around it).
    """
    rel = Path(specs_dir)
    bases: list[Path] = []
    if rel.is_absolute():
        candidates = [rel]
    else:
        if project_dir:
            bases.append(Path(project_dir))
        top = git_toplevel(loop_dir)
        if top is not None:
            bases.append(top)
        if root is not None:
            bases += [root, root.parent]
        bases.append(loop_dir.parent.parent)
        candidates = [b / rel for b in bases] + [loop_dir / rel]
    candidates.append(loop_dir / "specs")
    limit = within.resolve() if within is not None else None
    for candidate in candidates:
        if not _is_dir(candidate):
            continue
        if limit is not None and not candidate.resolve().is_relative_to(limit):
            continue
        return candidate
    return None


# -- what the prompt builder and the gate read ----------------------------------------


def spec_content(specs_dir: Path, task_id: str, limit: int | None = None) -> str:
    """The spec markdown for a task: every `*.md` mentioning its id, else 00-overview.md.

    Each file is headed by its name; the result is cut to `limit` characters.
    """
    try:
        files = sorted(p for p in specs_dir.glob("*.md") if p.is_file())
    except OSError:
        return ""
    texts: list[tuple[str, str]] = []
    for path in files:
        try:
            texts.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    chosen = [t for t in texts if task_id and task_id in t[1]]
    if not chosen:
        chosen = [t for t in texts if t[0] == "00-overview.md"]
    out = "\n\n".join(f"<!-- {name} -->\n{text.strip()}" for name, text in chosen)
    if limit is not None and len(out) > limit:
        out = out[: max(0, limit - 20)].rstrip() + "\n[... spec cut ...]"
    return out


def _criteria(entry: TaskEntry, config: LoopConfig) -> list[Criterion]:
    if entry.acceptance_criteria:
        return list(entry.acceptance_criteria)
    if config.check_command:
        return [
            Criterion(
                criterion=f"the loop's check command passes: {config.check_command}",
                check=ScriptCheck(run=config.check_command),
            )
        ]
    return [signoff_criterion(entry)]


SIGNOFF_NOTE = (
    "no acceptance_criteria and no check_command: the judge model (when one is "
    "configured) or a person signs the work off; add acceptance_criteria to the entry, "
    "or a check_command to config.json, to have it checked by a script"
)


def unchecked_tasks(config: LoopConfig, state: LoopState) -> list[str]:
    """The ids of tasks no script checks (no acceptance_criteria, no check_command)."""
    if config.check_command:
        return []
    return [
        e.id
        for e in state.tests
        if e.automatable and not e.acceptance_criteria and e.status is not TaskStatus.PASSED
    ]


def signoff_criterion(entry: TaskEntry) -> Criterion:
    """What verifies a seed-format task without criteria, in a loop without a
    check_command: what the entry says it should do, judged (or signed off)."""
    what = entry.description or entry.notes or entry.title or f"task {entry.id} is done"
    return Criterion(
        criterion=f"{entry.id} does what it says ({SIGNOFF_NOTE})",
        check=NaturalCheck(description=what),
    )


def criteria_for(root: Path, loop: str, task_id: str) -> list[Criterion]:
    """A task's acceptance criteria as the files under `root` say (a checkout of main).

    `loop` is a loop directory name (coding-loops layout, found at `root/loop`, or one or
    two levels down) or a spec's stem (`SPEC` for `root/SPEC.yaml`). Returns the task's
    own `acceptance_criteria`, else the config's `check_command` as a script criterion,
    else a natural criterion for the judge or a person (`signoff_criterion`). Only files inside `root`'s tree are read; `$CODING_LOOP_PROJECT_DIR` is
    ignored. Raises `UnknownTask` for an unknown loop or task, `ValidationFailed` for
    invalid files.
    """
    root = Path(root)
    within = git_toplevel(root) or root
    loop_dir = _find_loop_dir(root, loop)
    if loop_dir is not None:
        found = load_loop(loop_dir, root=root, project_dir=None, within=within)
        return found.criteria(task_id)
    spec_path = _find_spec(root, loop)
    if spec_path is None:
        raise UnknownTask(loop, None, root)
    spec = load_spec(spec_path)
    try:
        return list(spec.task(task_id).acceptance_criteria)
    except KeyError:
        raise UnknownTask(loop, task_id, root) from None


def _find_loop_dir(root: Path, loop: str) -> Path | None:
    if not loop or "/" in loop or loop in (".", ".."):
        return None
    if root.name == loop and _is_file(root, "config.json"):
        return root
    if _is_file(root / loop, "config.json"):
        return root / loop
    for sub in _subdirs(root):
        if _is_file(sub / loop, "config.json"):
            return sub / loop
        for subsub in _subdirs(sub):
            if _is_file(subsub / loop, "config.json"):
                return subsub / loop
    return None


def _find_spec(root: Path, loop: str) -> Path | None:
    """The SPEC.yaml whose stem names this loop (`spec` for SPEC.yaml), in root or one down."""
    wanted = _stem_key(loop.removesuffix(".yaml").removesuffix(".yml"))
    for directory in (root, *_subdirs(root)):
        try:
            files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
        except OSError:
            continue
        for path in files:
            if _stem_key(path.stem) == wanted and path.is_file():
                return path
    return None


def _stem_key(stem: str) -> str:
    """A spec's loop name: its stem lower-cased, safe in a branch name (as the worker names it)."""
    stem = stem.lower()
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or "spec"


def _cycles(graph: dict[str, list[str]], loops: dict[str, Loop]) -> list[str]:
    """One problem per dependency cycle (a task that can never start)."""
    out: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()

    def report(cycle: list[str]) -> None:
        key = frozenset(cycle)
        if key in reported:
            return
        reported.add(key)
        loop_name = cycle[0].partition("/")[0]
        where = str(loops[loop_name].state_path) if loop_name in loops else cycle[0]
        out.append(
            problem(
                where,
                "dependsOn",
                "dependency cycle: "
                + " -> ".join([*cycle, cycle[0]])
                + " — none of these can ever start; remove one dependsOn",
            )
        )

    for start in graph:  # iterative DFS: a long chain must not hit the recursion limit
        if start in state:
            continue
        state[start] = 1
        path = [start]
        stack = [iter(graph[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(nxt) == 1:
                report(path[path.index(nxt) :])
            elif nxt in graph and nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return out
