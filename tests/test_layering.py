"""The package table of CONTRIBUTING.md, enforced: `events` <- `bus` <- `infra` (the
shared layer) <- roles <- `cli`; `infra` imports no role and nothing below it imports
`infra`; `loops`, `gates` and `agents` never import each other (they meet only through
events)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"events", "bus", "infra", "loops", "gates", "agents", "app", "cli"}
ALLOWED = {
    "events": set(),
    "bus": {"events"},
    "infra": {"events", "bus"},
    "loops": {"events", "bus", "infra"},
    "gates": {"events", "bus", "infra"},
    "agents": {"events", "bus", "infra"},
    # The system assembled from the roles.
    "app": PROJECT - {"cli"},
    "cli": PROJECT,
}


def imports_of(path: Path) -> set[str]:
    """The project packages `path` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_package(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_package(node.module))
    return {name for name in found if name.split(".")[0] in PROJECT}


def _package(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = imports_of(path) - ALLOWED[package] - {package}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"forbidden imports (see CONTRIBUTING.md): {bad}"


def test_the_layering_check_sees_an_upward_import_from_the_shared_layer(tmp_path: Path) -> None:
    upward = tmp_path / "bad.py"
    upward.write_text("from loops.workspace import Workspace\nimport cli.main\nimport git\n")
    assert imports_of(upward) - ALLOWED["infra"] == {"loops", "cli"}
    downward = tmp_path / "low.py"
    downward.write_text("from infra.git import git\n")
    assert imports_of(downward) - ALLOWED["bus"] == {"infra"}


def test_events_imports_no_third_party_but_pydantic() -> None:
    for path in (ROOT / "events").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            for name in names:
                assert name in {"pydantic", "events", "__future__"} or name in _stdlib(), (
                    path,
                    name,
                )


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
