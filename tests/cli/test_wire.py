"""`wire(...)`: the one composition of the worker, gate and merge queue; and the loop a
role process runs (`app.roles.select_loop`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.human import HumanAgent
from agents.monitor import Monitor
from agents.pm import ProjectManager
from app.compose import wire
from app.roles import role_agent, select_loop
from events import ConfigError
from gates import VerificationGate
from gates.trust import TrustingGate
from infra.settings import Settings
from loops.project import Project, load_project
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


def test_a_monitor_process_is_built_as_loops_up_builds_its_monitor(
    redis_backend: RedisBackend, tmp_path: Path
) -> None:
    """One builder for the monitor, the PM and the human interface: `loops monitor`
    gets the task refiner that `loops up` gives its monitor when a model is set up,
    and the PM and the monitor still start without the project's files."""
    bus = redis_backend.bus()
    shutil.copytree(SEED, tmp_path / "repo")
    project = load_project(tmp_path / "repo" / "coding-loops")
    with_model = Settings.from_env({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    monitor = role_agent("monitor", bus, with_model, lambda: project)
    assert isinstance(monitor, Monitor) and monitor.refiner is not None
    without = role_agent("monitor", bus, Settings.from_env({}), lambda: project)
    assert isinstance(without, Monitor) and without.refiner is None

    def missing() -> Project:
        raise ConfigError("no loops here")

    assert isinstance(role_agent("pm", bus, with_model, missing), ProjectManager)
    assert isinstance(role_agent("monitor", bus, with_model, missing), Monitor)
    assert isinstance(role_agent("human", bus, with_model, missing), HumanAgent)
