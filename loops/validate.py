"""Every problem of every file a person gives: what `loops validate PATH...` reports.

A file is checked by its loader (`load_spec`, `load_config`, `load_state`,
`load_health`, `load_project_config`) plus the typos those keep; a directory is a
project: its SPEC.yaml, or each `loop-*/` through `check_loop` (the project loader's
collect-every-problem mode), its project.json, and the dependencies between loops.
Whatever the input, the answer is lines, never an exception: a bug in a check is
reported as a problem of the file it was checking.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import yaml

from events import ValidationFailed
from loops.files import PARSE_ERRORS, problem, read_text, show, typo_problems
from loops.harness import LoopState, load_config, load_health, load_project_config, load_state
from loops.names import loop_name_problem
from loops.project import (
    SIGNOFF_NOTE,
    Loop,
    Problems,
    Project,
    check_loop,
    find_loop_dirs,
    parse_task_ref,
    project_config_path,
    resolve_specs_dir,
    specs_missing,
    unchecked_tasks,
)
from loops.spec import load_spec

__all__ = ["Report", "validate_paths"]


@dataclass
class Report:
    """What `validate_paths` found, per file in the order checked."""

    problems: Problems = field(default_factory=dict)  # file -> its problems ([] = OK)
    notes: dict[str, list[str]] = field(default_factory=dict)  # what to know of a good file

    def guarded(self, label: str, check: Callable[[], None]) -> None:
        """Run one check; whatever goes wrong in it is a line for this file."""
        try:
            check()
        except ValidationFailed as exc:
            self.problems.setdefault(exc.path or label, []).extend(exc.problems)
        except OSError as exc:
            why = f"cannot read: {exc.strerror or exc} — check the path and permissions"
            self.problems.setdefault(label, []).append(problem(label, "", why))
        except Exception as exc:  # the contract is "never a traceback"; still a failure
            why = (
                f"internal error while validating ({type(exc).__name__}: "
                f"{show(str(exc), 120)}) — please report this"
            )
            self.problems.setdefault(label, []).append(problem(label, "", why))


def validate_paths(paths: Iterable[str | Path], project_dir: str | None) -> Report:
    """Check each path (a file, or a project directory); `project_dir` is where a
    config's `specs_dir` is looked up first (the `CODING_LOOP_PROJECT_DIR` setting)."""
    report = Report()
    for raw in paths:
        report.guarded(str(raw), partial(_validate_path, Path(raw), project_dir, report))
    return report


# -- what a path is -----------------------------------------------------------------


def _validate_path(path: Path, env_dir: str | None, report: Report) -> None:
    if path.is_dir():
        _validate_dir(path, env_dir, report)
        return
    kind = _kind(path)
    source = str(path)
    if kind is not None:
        _validate_file(path, kind, env_dir, report)
    elif not path.exists():
        report.problems[source] = [problem(source, "", "not found — check the path")]
    else:
        report.problems[source] = [
            problem(
                source,
                "",
                "cannot tell what this file is — give a SPEC.yaml (*.yaml), config.json, "
                "test-state.json, health.json or project.json, or a project directory",
            )
        ]


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".yaml", ".yml")):
        return "spec"
    if name == "project.json":
        return "project"
    for suffix, kind in (("config.json", "config"), ("state.json", "state")):
        if name.endswith(suffix):
            return kind
    if name == "health.json":
        return "health"
    if not path.is_file():
        return None
    try:
        text = read_text(path, str(path), "not found")
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (ValidationFailed, yaml.YAMLError, *PARSE_ERRORS):
        return None
    if isinstance(data, dict):
        keys = (("tests", "state"), ("loop_name", "health"), ("specs_dir", "config"))
        for key, kind in (*keys, ("goal", "spec")):
            if key in data:
                return kind
    return None


def _validate_file(path: Path, kind: str, env_dir: str | None, report: Report) -> None:
    source = str(path)
    found: list[str] = []
    report.problems[source] = found
    if kind == "spec":
        load_spec(path)
    elif kind == "config":
        odd = loop_name_problem(path.resolve().parent.name)
        if odd:
            found.append(problem(source, "", odd))
        config = load_config(path)
        found.extend(typo_problems(config, source))
        root = path.parent.parent
        if resolve_specs_dir(path.parent, config.specs_dir, root=root, project_dir=env_dir) is None:
            found.append(specs_missing(path, config.specs_dir, path.parent))
    elif kind == "project":
        load_project_config(path)
    elif kind == "state":
        state = load_state(path)
        found.extend(typo_problems(state, source))
        found.extend(_local_dependency_problems(source, state))
    else:
        found.extend(typo_problems(load_health(path), source))


def _local_dependency_problems(source: str, state: LoopState) -> list[str]:
    """A standalone test-state.json: same-file dependencies must name existing tests."""
    ids = {entry.id for entry in state.tests}
    return [
        problem(
            source,
            f"tests[{i}].dependsOn",
            f"depends on '{show(dep)}' but no test in this file has that id — fix the "
            "id, or write 'loop-name/TASK-ID' for another loop's task",
        )
        for i, entry in enumerate(state.tests)
        for dep in entry.dependencies
        if (ref := parse_task_ref(dep)).loop is None and ref.task not in ids
    ]


# -- a project directory ------------------------------------------------------------


def _validate_dir(directory: Path, env_dir: str | None, report: Report) -> None:
    try:
        specs = sorted(
            p for p in directory.iterdir() if p.name.lower() in ("spec.yaml", "spec.yml")
        )
    except OSError as exc:
        why = f"cannot list the directory: {exc.strerror or exc}"
        report.problems[str(directory)] = [problem(str(directory), "", why)]
        return
    for spec in specs:
        report.guarded(str(spec), partial(_validate_file, spec, "spec", env_dir, report))
    loop_dirs = find_loop_dirs(directory)
    config_path = project_config_path(loop_dirs) if loop_dirs else directory / "project.json"
    has_config = config_path.is_file()
    if has_config:
        check = partial(_validate_file, config_path, "project", env_dir, report)
        report.guarded(str(config_path), check)
    loops = [_validate_loop(loop_dir, directory, env_dir, report) for loop_dir in loop_dirs]
    if not (specs or has_config or loop_dirs):
        report.problems[str(directory)] = [
            problem(
                str(directory),
                "",
                "no SPEC.yaml and no loop-*/config.json here — give a project directory "
                "or the files themselves",
            )
        ]
        return
    good = [lp for lp in loops if lp is not None]
    if good and len(good) == len(loops):
        for line in Project(root=directory, loops=tuple(good)).dependency_problems():
            target = next(
                (str(lp.state_path) for lp in good if line.startswith(f"{lp.state_path}:")),
                str(directory),
            )
            report.problems.setdefault(target, []).append(line)


def _validate_loop(loop_dir: Path, root: Path, env_dir: str | None, report: Report) -> Loop | None:
    """Every file of one loop, through the project's loader in its collect-every-problem
    mode (`check_loop`); a note for the tasks no script checks."""
    holder: list[Loop] = []

    def check() -> None:
        loop = check_loop(loop_dir, report.problems, root=root, project_dir=env_dir, strict=True)
        if loop is not None:
            holder.append(loop)
            unchecked = unchecked_tasks(loop.config, loop.state)
            if unchecked:
                note = f"{loop.state_path}: {', '.join(unchecked)}: {SIGNOFF_NOTE}"
                report.notes[str(loop.state_path)] = [note]

    report.guarded(str(loop_dir / "config.json"), check)
    return holder[0] if holder else None
