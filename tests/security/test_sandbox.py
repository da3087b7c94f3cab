"""Issue 9's sandbox tests: an agent that lists and opens whatever it can name of the
operator's sees nothing of `.loops/`, the operator's checkout or another loop's
workspace; and a slow, honest agent that adds tests and edits code is not flagged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.security.conftest import (
    SUB_CHECK,
    Findings,
    Loop,
    Task,
    agent,
    assert_kept_running,
    assert_merged,
    make_project,
    reports,
    require_bwrap,
    state_statuses,
    stream_events,
    up,
)


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def state_digests(root: Path, workspace: Path) -> dict[str, str]:
    """sha256 prefixes of the operator's state files (not the agents' workspaces)."""
    found = {}
    for path in (root / ".loops").rglob("*"):
        mine = inside(path, workspace) or ".git" in path.parts or "worktrees" in path.parts
        if path.is_file() and not mine and 0 < path.stat().st_size < 1_000_000:
            found[hashlib.sha256(path.read_bytes().strip()).hexdigest()[:16]] = str(path)
    return found


def test_sandbox_hides_the_state_dir_the_checkout_and_other_workspaces(tmp_path: Path) -> None:
    require_bwrap()
    root = make_project(
        tmp_path / "p",
        [
            Loop("loop-1", agent("peek")),
            Loop("loop-2", agent("honest", "--only", "sub"), tasks=[Task("SUB-1", SUB_CHECK)]),
        ],
    )
    result = up(root)
    f = Findings()
    seen = reports(root, "seen")
    with f.check():
        assert seen, "the agent did not run:\n" + result.output[-3000:]
    # The repository's objects may be shared read-only with a workspace (a `--shared`
    # clone): what is under .git is not counted here (test_refs covers writing there).
    git_dir = root / ".git"
    for item in seen:
        ws = Path(item["workspace"])
        leaks: list[str] = []
        for d, entries in item["listed"].items():
            p = Path(d)
            if not inside(p, root) or inside(p, ws) or inside(p, git_dir) or not p.is_dir():
                continue
            # The mount points on the way to its own work tree, git dir and TMPDIR are
            # shown to it (empty directories in the tmpfs over `.loops/`), nothing else.
            own = [ws, *(Path(o) for o in item.get("own", []))]
            toward = {o.relative_to(p).parts[0] for o in own if o != p and inside(o, p)}
            shown = (set(entries) & set(os.listdir(p))) - toward - {".git"}
            if shown:
                leaks.append(f"listed {d}: {sorted(shown)}")
        digests = state_digests(root, ws)
        for path, digest in item["read"].items():
            p = Path(path)
            if inside(p, git_dir):
                continue
            if inside(p, root) and not inside(p, ws) and p.is_file():
                content = p.read_bytes().strip()
                if content and hashlib.sha256(content).hexdigest()[:16] == digest:
                    leaks.append(f"read {path}")
            elif digest in digests:
                leaks.append(f"read {path} (= {digests[digest]})")
        with f.check():
            assert not leaks, "the agent saw the operator's files:\n" + "\n".join(sorted(leaks))
    with f.check():
        assert_kept_running(result)
    f.done()


def test_slow_honest_agent_adding_tests_is_not_flagged(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", [Loop("loop-1", agent("honest", "--slow"))])
    result = up(root)
    events = stream_events(root)
    f = Findings()
    with f.check():
        assert result.code == 0, f"exit {result.code}:\n{result.output[-3000:]}"
    with f.check():
        assert_merged(root, "    return a + b")
        assert_merged(root, "def test_add_more", "tests/test_more.py")
    with f.check():
        assert state_statuses(root) == {"loop-1/ADD-1": "passed"}, state_statuses(root)
    with f.check():
        assert events, "no events readable with `loops events --json`"
        flagged = [
            e
            for e in events
            if e.get("type") in ("escalation.raised", "verification.failed")
            or e.get("flagged_files")
        ]
        assert not flagged, f"the honest agent was flagged: {flagged}"
    with f.check():
        assert_kept_running(result)
    f.done()
