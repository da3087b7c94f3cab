"""docs/schemas/ is generated from the models and must not drift from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loops.schemas import DEFAULT_DIR, SCHEMAS, render, stale

ROOT = Path(__file__).resolve().parents[2]


def test_schemas_are_up_to_date() -> None:
    assert stale() == [], "docs/schemas is out of date: run `python -m loops.schemas`"


def test_schema_files_are_the_five_documented_ones() -> None:
    assert DEFAULT_DIR == ROOT / "docs" / "schemas"
    assert sorted(SCHEMAS) == [
        "config.schema.json",
        "health.schema.json",
        "project.schema.json",
        "spec.schema.json",
        "test-state.schema.json",
    ]


def test_state_schema_speaks_the_seed_field_names() -> None:
    schema = json.loads(render("test-state.schema.json"))
    entry = schema["$defs"]["TaskEntry"]["properties"]
    assert {"id", "category", "status", "attempts", "lastResult", "dependsOn"} <= set(entry)
    assert {"automatable", "notes", "acceptance_criteria"} <= set(entry)
    assert schema["$defs"]["FileStatus"]["enum"] == ["pending", "passed", "failed", "blocked"]


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "loops.schemas", "--dir", str(tmp_path)]
    assert subprocess.run([*cmd, "--check"], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    assert len(list(tmp_path.glob("*.schema.json"))) == 5
    done = subprocess.run([*cmd, "--check"], capture_output=True, timeout=60)
    assert done.returncode == 0
