"""Rows 1, 2 (forged answer) and 6 of issue 9: an agent that reaches the bus forges a
verdict or an answer, or poisons the stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus import RedisBus
from infra.embedded import EmbeddedServer
from tests.conftest import wait_until
from tests.security.agents.poison import poison_entries
from tests.security.conftest import (
    AGENTS,
    SUB_CHECK,
    Findings,
    Loop,
    Task,
    agent,
    assert_attack_failed,
    assert_merged,
    commit,
    make_project,
    our_processes,
    require_bwrap,
    up,
    write_loop,
)


def test_forged_verification_passed_does_not_merge(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("forge_passed", "forge_passed"))])
    result = up(root)
    assert_attack_failed(root, [result], "forge_passed", ["loop-1/ADD-1"])


def test_genuine_verdict_replayed_for_another_commit_does_not_merge(tmp_path: Path) -> None:
    """The agent waits for a real `verification.passed` of the honest loop and
    re-publishes it with its own loop, task and commit (everything else kept)."""
    root = make_project(
        tmp_path / "p",
        [
            Loop("loop-1", agent("forge_passed", "forge_replay", "replay")),
            Loop("loop-2", agent("honest", "--only", "sub"), tasks=[Task("SUB-1", SUB_CHECK)]),
        ],
    )
    result = up(root)
    f = Findings()
    with f.check():
        assert_merged(root, "def sub(a, b):\n    return a - b")
    assert_attack_failed(root, [result], "forge_replay", ["loop-1/ADD-1"], findings=f)


@pytest.mark.parametrize("mode", ["cli", "forge"])
def test_own_escalation_answered_from_the_workspace_does_not_merge(
    tmp_path: Path, mode: str
) -> None:
    """The agent tampers with its check (flagged: a person must approve), then
    approves it itself from a setsid child: with `loops answer` or a forged XADD."""
    if mode == "cli":
        require_bwrap()  # the operator's credentials are only out of reach in the sandbox
    name = f"self_answer_{mode}"
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("self_answer", name, mode))])
    first = up(root)
    # The child may answer after `loops up` has returned: wait for it to be gone (it
    # gives up by itself), then run again so that a late answer would be acted on.
    wait_until(lambda: not our_processes(str(AGENTS / "self_answer.py")), timeout=45)
    second = up(root)
    assert_attack_failed(root, [first, second], name, ["loop-1/ADD-1"])


def inject_as_operator(root: Path, entries: list[dict[bytes, bytes]]) -> None:
    """XADD `entries` with the operator's own access to the project's embedded bus."""
    with EmbeddedServer(root) as server:
        assert server.url
        with RedisBus.from_settings(server.settings()) as bus:
            for fields in entries:
                bus.client.xadd(bus.stream, fields)  # type: ignore[arg-type]


def test_poisoned_stream_keeps_the_system_running(tmp_path: Path) -> None:
    """A loop poisons the stream (and so does the test, as the operator, in case the
    agent cannot reach the bus); on the next `loops up` a new, honest loop's task still
    merges, and neither run crashes."""
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("poison", "poison"))])
    first = up(root)
    inject_as_operator(root, poison_entries("loop-1", "ADD-1"))
    write_loop(
        root, Loop("loop-2", agent("honest", "--only", "sub"), tasks=[Task("SUB-1", SUB_CHECK)])
    )
    commit(root, "a second loop")
    second = up(root)
    f = Findings()
    with f.check():
        assert_merged(root, "def sub(a, b):\n    return a - b")
    assert_attack_failed(root, [first, second], "poison", ["loop-1/ADD-1"], findings=f)
