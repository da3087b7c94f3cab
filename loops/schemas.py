"""JSON Schemas of the users' files, generated from the models.

    python -m loops.schemas            # (re)write docs/schemas/*.schema.json
    python -m loops.schemas --check    # exit 1 if any file is out of date

Editors use them for completion (`# yaml-language-server: $schema=...`); the loaders
stay the authority: they also check what a schema cannot say (unique ids, messages).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from loops.harness import Health, LoopConfig, LoopState, ProjectConfig
from loops.spec import Spec

__all__ = ["SCHEMAS", "render", "schema_of", "write_all"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "spec.schema.json": (Spec, "SPEC.yaml (ralph_loop spec)"),
    "config.schema.json": (LoopConfig, "config.json of a coding loop"),
    "test-state.schema.json": (LoopState, "test-state.json of a coding loop"),
    "health.schema.json": (Health, "health.json written by a running loop"),
    "project.schema.json": (ProjectConfig, "project.json of a coding-loops project"),
}


def schema_of(model: type[BaseModel], title: str, filename: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://coding-loops.invalid/schemas/{filename}",
        **schema,
        "title": title,
    }


def render(filename: str) -> str:
    model, title = SCHEMAS[filename]
    return json.dumps(schema_of(model, title, filename), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for filename in SCHEMAS:
        path = directory / filename
        text = render(filename)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale(directory: Path = DEFAULT_DIR) -> list[Path]:
    """The schema files that differ from what the models generate."""
    out = []
    for filename in SCHEMAS:
        path = directory / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != render(filename):
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loops.schemas", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        old = stale(args.dir)
        for path in old:
            print(f"{path}: out of date — run: python -m loops.schemas", file=sys.stderr)
        return 1 if old else 0
    for path in write_all(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
