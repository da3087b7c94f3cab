"""Issue 9's sandbox test: list and open everything of the operator's it can name (the
directories above its workspace, every `.loops/`, the operator's checkout found
through git), and report what it saw: names listed, and sha256 prefixes of files read.
Replies without a promise: it only looks."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import hostile as h

NAMES = ("redis.url", "dashboard.token", "redis.pid", "up.lock", "config.json", "test-state.json",
         "README.md", "Makefile", ".git/config", "calc/ops.py")  # fmt: skip


def gitdir_of(ws: Path) -> str:
    """The git dir the workspace's `.git` file names (its own, read-only)."""
    try:
        text = (ws / ".git").read_text()
    except OSError:
        return ""
    return text.split("gitdir:", 1)[1].strip() if "gitdir:" in text else ""


def main() -> int:
    sys.stdin.read()
    ws = h.workspace().resolve()
    dirs: list[Path] = []
    for start in h.start_points():
        dirs += list(h.ancestors(start))
    dirs += h.state_dirs()
    repos = h.operator_repos()
    dirs += repos
    for base in list(dirs):
        dirs += [base / ".loops", base / ".loops" / "state", base / ".loops" / "worktrees"]
    listed: dict[str, list[str]] = {}
    read: dict[str, str] = {}
    for d in dict.fromkeys(dirs):
        if d == Path("/") or str(d) in ("/tmp", "/work", "/root", "/home"):
            continue
        with contextlib.suppress(OSError):
            listed[str(d)] = sorted(os.listdir(d))
    for where in list(listed):
        for name in [*NAMES, *listed[where]]:
            path = Path(where) / name
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size < 1_000_000:
                    read[str(path)] = h.sha(path.read_bytes().strip())
    own = [os.environ.get("TMPDIR", ""), gitdir_of(ws)]  # its own mount points, shown to it
    h.report(
        "seen",
        workspace=str(ws),
        own=[o for o in own if o],
        listed=listed,
        read=read,
        repos=[str(r) for r in repos],
    )
    print(f"I looked around. <promise>{os.environ.get('LOOPS_TASK_ID')} done</promise>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
