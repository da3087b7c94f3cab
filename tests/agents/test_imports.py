"""agents/ imports only `events`, `bus` and `infra` of this project (CONTRIBUTING.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import agents

PROJECT = {"events", "bus", "infra", "loops", "gates", "agents", "cli"}
ALLOWED = {"events", "bus", "infra", "agents"}


def test_agents_import_only_events_bus_and_infra() -> None:
    root = Path(agents.__file__).parent
    bad = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT and top not in ALLOWED:
                    bad.append(f"{path.name}: {name}")
    assert bad == []


def test_default_policy_ships_with_the_package() -> None:
    assert (Path(agents.__file__).parent / "default-policy.yaml").is_file()


def test_subscribed_types_are_real_event_types() -> None:
    from agents.human import HUMAN_TYPES
    from agents.monitor import MONITOR_TYPES
    from agents.pm import PM_TYPES
    from events import EVENT_TYPES

    assert set(MONITOR_TYPES + PM_TYPES + HUMAN_TYPES) <= set(EVENT_TYPES)
