"""`loops validate PATH...`: check SPEC.yaml, config.json, test-state.json, health.json
and project.json.

A directory means every file of the project in it (SPEC.yaml, or each `loop-*/` with
its config, state and health files, the project.json next to them, and the dependencies
between loops). Prints
`OK path` per good file and one line per problem, naming file and field; exits 1 if
anything is wrong. Never a traceback: whatever the input, the answer is a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml

from cli.context import settings_of
from events import ValidationFailed
from loops.files import PARSE_ERRORS, problem, read_text, show, typo_problems
from loops.harness import (
    LoopConfig,
    LoopState,
    TaskEntry,
    load_config,
    load_health,
    load_project_config,
    load_state,
)
from loops.names import loop_name_problem
from loops.project import (
    SIGNOFF_NOTE,
    Loop,
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

EXIT_OK, EXIT_FAIL = 0, 1

Results = dict[str, list[str]]  # file -> its problems ([] = OK), in the order checked
NOTES: Results = {}  # file -> what a person should know about a valid file (this run's)


def run(args: argparse.Namespace) -> int:
    results: Results = {}
    NOTES.clear()
    env_dir = settings_of(args).project_dir
    for raw in args.paths:
        _guarded(results, str(raw), partial(_validate_path, Path(raw), env_dir, results))
    bad = 0
    count = 0
    for path, problems in results.items():
        if problems:
            bad += 1
            count += len(problems)
            for line in problems:
                print(_one_line(line))
        else:
            print(f"OK {path}")
            for note in NOTES.get(path, []):
                print(_one_line(f"NOTE {note}"))
    sys.stdout.flush()
    if bad:
        print(
            f"loops validate: {count} problem{'s' * (count != 1)} in {bad} file{'s' * (bad != 1)}",
            file=sys.stderr,
        )
        return EXIT_FAIL
    return EXIT_OK


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _guarded(results: Results, label: str, check: Callable[[], None]) -> None:
    """Run one check; a bug in it is reported as a line for this file, not a traceback."""
    try:
        check()
    except ValidationFailed as exc:
        results.setdefault(exc.path or label, []).extend(exc.problems)
    except OSError as exc:
        results.setdefault(label, []).append(
            problem(
                label, "", f"cannot read: {exc.strerror or exc} — check the path and permissions"
            )
        )
    except Exception as exc:  # the contract is "never a traceback"; this is still a failure
        results.setdefault(label, []).append(
            problem(
                label,
                "",
                f"internal error while validating ({type(exc).__name__}: "
                f"{show(str(exc), 120)}) — please report this",
            )
        )


# -- what a path is -----------------------------------------------------------------


def _validate_path(path: Path, env_dir: str | None, results: Results) -> None:
    if path.is_dir():
        _validate_dir(path, env_dir, results)
        return
    kind = _kind(path)
    source = str(path)
    if kind is None:
        if not path.exists():
            results[source] = [problem(source, "", "not found — check the path")]
        else:
            results[source] = [
                problem(
                    source,
                    "",
                    "cannot tell what this file is — give a SPEC.yaml (*.yaml), config.json, "
                    "test-state.json, health.json or project.json, or a project directory",
                )
            ]
        return
    _validate_file(path, kind, env_dir, results)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".yaml", ".yml")):
        return "spec"
    if name == "project.json":
        return "project"
    if name.endswith("config.json"):
        return "config"
    if name.endswith("state.json"):
        return "state"
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
        if "tests" in data:
            return "state"
        if "loop_name" in data:
            return "health"
        if "specs_dir" in data:
            return "config"
        if "goal" in data:
            return "spec"
    return None


def _validate_file(path: Path, kind: str, env_dir: str | None, results: Results) -> None:
    source = str(path)
    results[source] = []
    if kind == "spec":
        load_spec(path)
    elif kind == "config":
        odd = loop_name_problem(path.resolve().parent.name)
        if odd:
            results[source].append(problem(source, "", odd))
        config = load_config(path)
        results[source].extend(_config_extras(path, config))
        specs = resolve_specs_dir(
            path.parent,
            config.specs_dir,
            root=path.parent.parent,
            project_dir=env_dir,
        )
        if specs is None:
            results[source].append(specs_missing(path, config.specs_dir, path.parent))
    elif kind == "project":
        load_project_config(path)
    elif kind == "state":
        state = load_state(path)
        results[source].extend(_state_extras(path, state))
        results[source].extend(_local_dependency_problems(source, state))
    else:
        health = load_health(path)
        results[source].extend(typo_problems(health, source))


# -- a project directory ------------------------------------------------------------


def _validate_dir(directory: Path, env_dir: str | None, results: Results) -> None:
    found = False
    try:
        specs = sorted(
            p for p in directory.iterdir() if p.name.lower() in ("spec.yaml", "spec.yml")
        )
    except OSError as exc:
        results[str(directory)] = [
            problem(str(directory), "", f"cannot list the directory: {exc.strerror or exc}")
        ]
        return
    for spec in specs:
        found = True
        _guarded(results, str(spec), partial(_validate_file, spec, "spec", env_dir, results))
    loops: list[Loop] = []
    complete = True
    loop_dirs = find_loop_dirs(directory)
    config_path = project_config_path(loop_dirs) if loop_dirs else directory / "project.json"
    if config_path.is_file():
        found = True
        _guarded(
            results,
            str(config_path),
            partial(_validate_file, config_path, "project", env_dir, results),
        )
    for loop_dir in loop_dirs:
        found = True
        loop = _validate_loop(loop_dir, directory, env_dir, results)
        if loop is None:
            complete = False
        else:
            loops.append(loop)
    if not found:
        results[str(directory)] = [
            problem(
                str(directory),
                "",
                "no SPEC.yaml and no loop-*/config.json here — give a project directory "
                "or the files themselves",
            )
        ]
        return
    if loops and complete:
        project = Project(root=directory, loops=tuple(loops))
        for line in project.dependency_problems():
            target = next(
                (str(lp.state_path) for lp in loops if line.startswith(f"{lp.state_path}:")),
                str(directory),
            )
            results.setdefault(target, []).append(line)


def _validate_loop(
    loop_dir: Path, root: Path, env_dir: str | None, results: Results
) -> Loop | None:
    """Every file of one loop, through the project's loader in its collect-every-problem
    mode (`loops.project.check_loop`)."""
    holder: list[Loop] = []

    def check() -> None:
        loop = check_loop(loop_dir, results, root=root, project_dir=env_dir, strict=True)
        if loop is not None:
            holder.append(loop)
            unchecked = unchecked_tasks(loop.config, loop.state)
            if unchecked:
                note = f"{loop.state_path}: {', '.join(unchecked)}: {SIGNOFF_NOTE}"
                NOTES[str(loop.state_path)] = [note]

    _guarded(results, str(loop_dir / "config.json"), check)
    return holder[0] if holder else None


def _config_extras(path: Path, config: LoopConfig) -> list[str]:
    return typo_problems(config, str(path))


def _state_extras(path: Path, state: LoopState) -> list[str]:
    return typo_problems(state, str(path))


def _local_dependency_problems(source: str, state: LoopState) -> list[str]:
    """A standalone test-state.json: same-file dependencies must name existing tests."""
    ids = {entry.id for entry in state.tests}
    out = []
    for i, entry in enumerate(state.tests):
        out.extend(_missing_local(source, i, entry, ids))
    return out


def _missing_local(source: str, index: int, entry: TaskEntry, ids: set[str]) -> list[str]:
    out = []
    for dep in entry.dependencies:
        ref = parse_task_ref(dep)
        if ref.loop is None and ref.task not in ids:
            out.append(
                problem(
                    source,
                    f"tests[{index}].dependsOn",
                    f"depends on '{show(dep)}' but no test in this file has that id — fix the "
                    "id, or write 'loop-name/TASK-ID' for another loop's task",
                )
            )
    return out
