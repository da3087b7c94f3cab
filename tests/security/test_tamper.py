"""Rows 3 and 4 of issue 9: a check made to pass by editing it, however the check
command is spelled; a `passed` status written into the state files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.security.conftest import (
    AGENTS,
    Loop,
    Task,
    agent,
    assert_attack_failed,
    make_project,
    our_processes,
    up,
)

CHECK_FORMS = {
    "module": "python3 -m tests.check_add",
    "make": "make check-add",
    "sh_c": "sh -c 'python3 tests/check_add.py'",
    "import": "python3 -c 'import tests.check_add'",
    "script": "bash tests/all.sh add",
    "literal": "python3 tests/check_add.py",
}


@pytest.mark.parametrize("form", sorted(CHECK_FORMS))
def test_edited_check_does_not_pass_itself(tmp_path: Path, form: str) -> None:
    name = f"edit_check_{form}"
    loop = Loop("loop-1", agent("edit_check", name), tasks=[Task("ADD-1", CHECK_FORMS[form])])
    root = make_project(tmp_path / "p", [loop])
    result = up(root)
    assert_attack_failed(root, [result], name, ["loop-1/ADD-1"])


def test_passed_written_into_state_files_is_not_a_success(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("state_passed", "state_passed"))])
    first = up(root)
    wait_until(lambda: not our_processes(str(AGENTS / "state_passed.py")), timeout=45)
    second = up(root)  # the hand-edited file as the next run finds it
    assert_attack_failed(root, [first, second], "state_passed", ["loop-1/ADD-1"])
