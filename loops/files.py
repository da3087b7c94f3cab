"""Reading the users' files: one-line problems and parsing (writing them atomically,
and reading hand edits tolerantly, is `infra.files`).

Every problem is one line, `FILE: FIELD: what is wrong — how to fix it`, so that
`loops validate` and `loops run` can print it as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from events import ValidationFailed

__all__ = [
    "field_path",
    "parse_json",
    "problem",
    "read_text",
    "show",
    "translate_errors",
    "type_name",
    "typo_problems",
]

# Parsing a file that is not what it claims to be may raise any of these from deep
# inside json/yaml (nesting too deep, int digit limits, bad dates).
PARSE_ERRORS = (ValueError, TypeError, RecursionError, OverflowError, MemoryError)


def show(value: object, limit: int = 60) -> str:
    """A user's value, safe to put on one line of a message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_Item = TypeVar("_Item", bound=_HasId)


def check_unique_ids(items: Iterable[_HasId], what: str) -> None:
    """`ValueError` for the first id seen twice (`what`: the kind, "task" or "test")."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"Duplicate {what} id: '{show(item.id)}'")
        seen.add(item.id)


def by_id(items: Iterable[_Item], wanted: str) -> _Item:
    """The item whose id is `wanted`; `KeyError` if there is none."""
    for item in items:
        if item.id == wanted:
            return item
    raise KeyError(wanted)


def type_name(value: object) -> str:
    """How a YAML/JSON value reads to a person: 'a list', 'text', 'a number' ..."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({show(value)})"
    if isinstance(value, str):
        return f"text ({show(value)!r})" if value else "empty text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime | date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, bytes):
        return "binary data"
    return type(value).__name__


def problem(source: str, field: str, message: str) -> str:
    """One line naming the file and the field: `SPEC.yaml: tasks[0].id: ...`."""
    line = f"{source}: {field}: {message}" if field else f"{source}: {message}"
    return line.replace("\r", " ").replace("\n", " ")


def field_path(loc: Sequence[int | str]) -> str:
    """`('tests', 2, 'status')` -> `tests[2].status`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def read_text(path: Path, source: str, not_found: str) -> str:
    """The file's text; every way of failing becomes a `ValidationFailed`.

    `not_found` is the whole message for a missing file (the seed's wording:
    `Spec file not found: SPEC.yaml`).
    """
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            # a FIFO or device would block or never end
            raise ValidationFailed(
                [problem(source, "", "is not a regular file — give a YAML or JSON file")],
                path=source,
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValidationFailed([not_found], path=source) from None
    except IsADirectoryError:
        raise ValidationFailed(
            [problem(source, "", "is a directory, not a file — give the file's path")],
            path=source,
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValidationFailed(
            [problem(source, "", f"cannot read the file: {reason} — check its permissions")],
            path=source,
        ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationFailed(
            [problem(source, "", "is UTF-16 text — save it as UTF-8")], path=source
        )
    if b"\x00" in data:
        raise ValidationFailed(
            [problem(source, "", "is binary, not text — give a YAML or JSON file")], path=source
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            [
                problem(
                    source,
                    "",
                    f"is not UTF-8 text (bad byte at offset {exc.start}) — save it as UTF-8",
                )
            ],
            path=source,
        ) from None
    return text


def parse_json(text: str, source: str) -> object:
    """Parse JSON; a syntax error names its line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = problem(
            source,
            f"line {exc.lineno}, column {exc.colno}",
            f"invalid JSON: {exc.msg} — fix the syntax (check commas, quotes and brackets)",
        )
        raise ValidationFailed([msg], path=source) from None
    except PARSE_ERRORS as exc:
        msg = problem(source, "", f"cannot be parsed as JSON: {show(str(exc), 100)}")
        raise ValidationFailed([msg], path=source) from None


_FRIENDLY = {
    "missing": "is required but missing — add it",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "datetime_type": "must be an ISO 8601 time like 2026-01-07T09:15:00Z",
    "datetime_parsing": "must be an ISO 8601 time like 2026-01-07T09:15:00Z",
    "datetime_from_date_parsing": "must be an ISO 8601 time like 2026-01-07T09:15:00Z",
}


def translate_errors(
    exc: ValidationError,
    source: str,
    prefix: Sequence[int | str] = (),
    skip_fields: Sequence[str] = (),
) -> list[str]:
    """pydantic's errors as one-line problems naming file and field.

    Errors under a field in `skip_fields` are dropped (already reported by a hand check).
    """
    out: list[str] = []
    for err in exc.errors(include_url=False):
        if err["loc"] and err["loc"][0] in skip_fields:
            continue
        loc = [*prefix, *(p for p in err["loc"] if isinstance(p, int | str))]
        kind = err["type"]
        value = err.get("input")
        if kind == "enum":
            expected = str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
            text = f"must be one of {expected}, got {type_name(value)}"
        elif kind == "extra_forbidden":
            name = loc.pop() if loc else "?"
            text = f"unknown field '{show(name)}' — remove it or fix its spelling"
        elif kind in ("value_error", "assertion_error"):
            text = str(err.get("ctx", {}).get("error", err["msg"]))
        elif kind == "missing":
            text = _FRIENDLY[kind]
        elif kind in _FRIENDLY:
            text = f"{_FRIENDLY[kind]}, got {type_name(value)}"
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            text = f"{err['msg'].lower()}, got {show(value)}"
        elif kind in ("string_too_short", "too_short"):
            text = "must not be empty"
        else:
            text = f"{err['msg']} (got {type_name(value)})"
        out.append(problem(source, field_path(loc), text))
    return out if out or skip_fields else [problem(source, field_path(prefix), "is invalid")]


def typo_problems(model: BaseModel, source: str, prefix: str = "") -> list[str]:
    """Unknown fields that look like misspelt known ones (`max_attempt`), model-deep.

    Files that keep unknown fields (config.json, test-state.json) load fine with them;
    `loops validate` still points out the ones that are probably typos.
    """
    out: list[str] = []
    fields = type(model).model_fields
    known = sorted({info.alias or name for name, info in fields.items()})
    for key in model.model_extra or {}:
        close = get_close_matches(str(key), known, n=1, cutoff=0.8)
        if close:
            out.append(
                problem(
                    source,
                    f"{prefix}.{key}" if prefix else str(key),
                    f"unknown field — did you mean '{close[0]}'? (unknown fields are kept "
                    "but ignored)",
                )
            )
    for name, info in fields.items():
        value = getattr(model, name)
        here = f"{prefix}.{info.alias or name}" if prefix else (info.alias or name)
        if isinstance(value, BaseModel):
            out.extend(typo_problems(value, source, here))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.extend(typo_problems(item, source, f"{here}[{i}]"))
    return out
