"""Row 5 of issue 9: an agent moves main or another loop's branch with git, or plants
hooks and `core.fsmonitor` for the harness to run."""

from __future__ import annotations

from pathlib import Path

from infra.git import git
from tests.security.conftest import (
    SUB_CHECK,
    Findings,
    Loop,
    Task,
    agent,
    assert_attack_failed,
    assert_merged,
    make_project,
    require_bwrap,
    up,
)

NO_HOOKS = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


def test_agent_cannot_move_main_or_another_loops_branch_or_plant_hooks(tmp_path: Path) -> None:
    # Without a sandbox the agent (same user) can write the operator's .git directly.
    require_bwrap()
    root = make_project(
        tmp_path / "p",
        [
            Loop("loop-1", agent("move_refs", "move_refs")),
            Loop("loop-2", agent("honest", "--only", "sub"), tasks=[Task("SUB-1", SUB_CHECK)]),
        ],
    )
    result = up(root)
    f = Findings()
    with f.check():
        ran = sorted(root.rglob("HOSTILE-HOOK-RAN"))
        assert not ran, "code planted by the agent ran outside it:\n" + "\n".join(
            f"{p}: {p.read_text().splitlines()[0]}" for p in ran
        )
    with f.check():
        assert_merged(root, "def sub(a, b):\n    return a - b")
    with f.check():
        # The harness writes the state files; anything else changed is the agent's doing.
        status = git(root, *NO_HOOKS, "status", "--porcelain", "--untracked-files=no")
        dirty = [ln for ln in status.splitlines() if not ln.endswith("test-state.json")]
        assert not dirty, "the operator's checkout was left changed:\n" + "\n".join(dirty)
    exists = ("main", *(b for b in ["loop/loop-2"] if git(root, "branch", "--list", b)))
    assert_attack_failed(root, [result], "move_refs", ["loop-1/ADD-1"], exists, f)
