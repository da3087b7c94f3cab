"""`wire(...)`: the one composition of the worker, gate and merge queue; and the loop a
role process runs (`app.roles.select_loop`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.compose import wire
from app.roles import select_loop
from events import ConfigError
from gates import VerificationGate
from gates.trust import TrustingGate
from infra.settings import Settings
from loops.project import load_project
from tests.conftest import RedisBackend

SEED = Path(__file__).resolve().parent.parent / "fixtures" / "seed-project"


def test_trust_agent_wires_the_trusting_gate_and_an_unprotected_merge(
    redis_backend: RedisBackend, tmp_path: Path
) -> None:
    bus = redis_backend.bus()
    settings = Settings.from_env({"LOOPS_REMOTE": "origin"})
    trusting = wire(bus, tmp_path, "main", settings, trust_agent=True)
    assert isinstance(trusting.gate(), TrustingGate)
    assert trusting.merge().settings.protected == ()
    checked = wire(bus, tmp_path, "main", settings, remote=settings.remote, test_command="make t")
    gate = checked.gate(instance="gate-2")
    assert isinstance(gate, VerificationGate)
    assert gate.settings.remote == "origin" and gate.source.instance == "gate-2"
    merge = checked.merge()
    assert merge.settings.protected and merge.settings.test_command == "make t"
    assert merge.settings.remote == "origin"


def test_the_loop_a_worker_process_runs(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(SEED, root)
    project = load_project(root / "coding-loops", project_dir=None)
    chosen, loop = select_loop(project, "loop-2-infrastructure", None, "opus")
    assert loop.config.model == "opus"  # the flag wins over config.json
    assert chosen.loop("loop-2-infrastructure") is loop
    by_config = select_loop(project, None, loop.config_path.resolve(), None)[1]
    assert by_config.name == "loop-2-infrastructure"  # named by its --config's directory
    with pytest.raises(ConfigError, match=r"no loop 'loop-9' in .* \(loops: loop-1-critical"):
        select_loop(project, "loop-9", None, None)
    with pytest.raises(ConfigError, match="name a LOOP, or give --config"):
        select_loop(project, None, None, None)
