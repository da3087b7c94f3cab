"""Rows 1, 2 (forged answer) and 6 of issue 9: an agent that reaches the bus forges a
verdict or an answer, or poisons the stream."""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import (
    Loop,
    agent,
    assert_kept_running,
    assert_no_false_success,
    assert_not_on_main,
    make_project,
    up,
)


def test_forged_verification_passed_does_not_merge(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("forge_passed", "forge_passed"))])
    result = up(root)
    assert_not_on_main(root, "forge_passed")
    assert_no_false_success(root, result, ["loop-1/ADD-1"])
    assert_kept_running(result)
