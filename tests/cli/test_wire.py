"""`wire(...)`: the one composition of the worker, gate and merge queue."""

from __future__ import annotations

from pathlib import Path

from app.compose import wire
from gates import VerificationGate
from gates.trust import TrustingGate
from infra.settings import Settings
from tests.conftest import RedisBackend


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
