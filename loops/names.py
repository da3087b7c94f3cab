"""Names that become git ref names: task ids (`refs/loops/tasks/LOOP/TASK`), loop
names (`loop/LOOP`), branches from a config.

`git check-ref-format`'s rules, in Python (no subprocess per name), for one component
of a ref, plus what the harness needs on top: no `/` (a task of another loop is
written `loop/TASK`) and no leading `-` (it would read as an option)."""

from __future__ import annotations

import re

_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def component_problem(name: str) -> str | None:
    """Why `name` cannot be one component of a git ref (and a task id or loop name),
    or None when it can."""
    if not name:
        return "is empty"
    bad = _BAD_CHARS.search(name)
    if bad:
        char = bad.group()
        what = (
            "a space"
            if char == " "
            else f"{char!r}"
            if char.isprintable()
            else "a control character"
        )
        return f"contains {what}"
    if "/" in name:
        return "contains '/' (a task of another loop is written loop/TASK)"
    if name.startswith("-"):
        return "starts with '-'"
    if name.startswith("."):
        return "starts with '.'"
    if ".." in name:
        return "contains '..'"
    if name.endswith(".lock"):
        return "ends with '.lock'"
    if name.endswith("."):
        return "ends with '.'"
    if "@{" in name or name == "@":
        return "contains '@{'" if "@{" in name else "is '@'"
    return None


def ref_problem(name: str) -> str | None:
    """Why `name` (slashes allowed, e.g. a branch `loop/api`) is not a valid git ref
    name, or None."""
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty part between '/'"
    for part in name.split("/"):
        why = component_problem(part)
        if why:
            return f"part '{part}' {why}" if "/" in name else why
    return None


def safe_component(name: str) -> str:
    """`name` mapped to a valid component: the suggestion shown with a problem, and
    how a SPEC.yaml's file name becomes a loop name."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    out = re.sub(r"\.{2,}", ".", out)
    while out.endswith(".lock"):
        out = out[: -len(".lock")] + "-lock"
    return out.strip("-.") or "x"


def task_id_problem(task_id: str) -> str | None:
    """The message for a task id that cannot name a git ref, or None."""
    return _problem("task id", task_id, "ids name git refs (refs/loops/tasks/LOOP/ID)", "it")


def loop_name_problem(name: str) -> str | None:
    """The message for a loop directory name that cannot name its branch, or None."""
    return _problem(
        "loop directory name", name, "it names the loop's branch (loop/NAME)", "the directory"
    )


def _problem(what: str, name: str, names: str, rename: str) -> str | None:
    why = component_problem(name)
    if why is None:
        return None
    return (
        f"{what} {name!r} {why}: {names}, so use letters, digits, '-', '_' and '.' "
        f"— rename {rename}, e.g. {safe_component(name)!r}"
    )
