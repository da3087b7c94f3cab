"""Row 7 of issue 9: secrets in the operator's environment and in a key file never
reach anything the system writes (the stream, `.loops/`, state files, transcripts,
logs, the output of `loops up`), even when a check and the agent print them all; and
an agent gets none of the operator's secrets in the first place."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from tests.security.conftest import (
    Findings,
    Loop,
    Task,
    Up,
    agent,
    assert_attack_failed,
    loops_cmd,
    make_project,
    reports,
    require_bwrap,
    up,
    up_env,
)

CHECK_LEAK = """import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
for name, value in sorted(os.environ.items()):
    print(f"{name}={value}")
print(pathlib.Path(%r).read_text())
from calc.ops import add

assert add(2, 3) == 5, add(2, 3)
"""


def operator_secrets(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Fresh secret values for `loops up`'s environment, and a key file."""
    values = {
        "ANTHROPIC_API_KEY": f"sk-ant-test-{secrets.token_hex(12)}",
        "GITHUB_PAT": f"ghp_{secrets.token_hex(18)}",
        "PGPASSWORD": f"pgpw{secrets.token_hex(8)}",
        "LOOPS_WEBHOOK_SECRET": f"whsec{secrets.token_hex(10)}",
    }
    key_file = tmp_path / "keys" / "api.key"
    key_file.parent.mkdir()
    values["api.key"] = f"sk-ant-api03-{secrets.token_hex(16)}"
    key_file.write_text(values["api.key"] + "\n")
    return values, key_file


def leaky_project(tmp_path: Path, name: str) -> tuple[Path, dict[str, str], Up]:
    values, key_file = operator_secrets(tmp_path)
    task = Task("ADD-1", "python3 tests/check_leak.py")
    root = make_project(
        tmp_path / "p",
        [Loop("loop-1", agent("leak", name, str(key_file)), tasks=[task])],
        files={"tests/check_leak.py": CHECK_LEAK % str(key_file)},
    )
    env = up_env(**{k: v for k, v in values.items() if k.isupper()})
    # With the dashboard: its token is one more secret the agent must not get.
    return root, values, up(root, env=env, dashboard=True)


def written_by_the_system(root: Path) -> dict[str, str]:
    """Every file under the project except git's objects and the agents' workspaces
    (what an agent writes in its own workspace is its business)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != ".git" and not (here / d / ".git").exists()]
        for name in filenames:
            path = here / name
            if path.stat().st_size < 50_000_000:
                found[str(path)] = path.read_bytes().decode(errors="replace")
    return found


def test_secrets_never_reach_what_the_system_writes(tmp_path: Path) -> None:
    root, values, result = leaky_project(tmp_path, "leak_written")
    stream = loops_cmd(root, "events", "--json", env=up_env())
    places = {"loops up output": result.output, "loops events --json": stream.stdout}
    places.update(written_by_the_system(root))
    f = Findings()
    with f.check():
        assert stream.code == 0 and stream.stdout.strip(), f"no event log: {stream.stderr}"
    with f.check():
        leaks = sorted(
            f"{name} in {where}"
            for where, text in places.items()
            for name, value in values.items()
            if value in text
        )
        assert not leaks, "secrets written by the system:\n" + "\n".join(leaks)
    assert_attack_failed(root, [result], "leak_written", ["loop-1/ADD-1"], findings=f)


def test_agent_gets_none_of_the_operators_secrets(tmp_path: Path) -> None:
    """The allow-listed environment drops the operator's secrets; the sandbox hides the
    dashboard token and the bus credentials. (`ANTHROPIC_API_KEY` may be passed on.)"""
    require_bwrap()
    root, values, result = leaky_project(tmp_path, "leak_env")
    sha = {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in values.items()}
    seen_env = {v for r in reports(root, "env") for v in r["values"].values()}
    seen_files = {v for r in reports(root, "files") for v in r["values"].values()}
    state = Path(root / ".loops")
    operator_files = {
        hashlib.sha256(p.read_bytes().strip()).hexdigest()[:16]: str(p)
        for p in state.rglob("*")
        if p.is_file() and ".git" not in p.parts and "worktrees" not in p.parts
        and 0 < p.stat().st_size < 1_000_000 and p.read_bytes().strip()
    }  # fmt: skip
    f = Findings()
    with f.check():
        assert reports(root, "env"), "the agent did not run:\n" + result.output[-2000:]
    with f.check():
        got = sorted(
            k for k in ("GITHUB_PAT", "PGPASSWORD", "LOOPS_WEBHOOK_SECRET") if sha[k] in seen_env
        )
        assert not got, f"the agent's environment holds the operator's {got}"
    with f.check():
        read = sorted(operator_files[s] for s in seen_files if s in operator_files)
        assert not read, "the agent read the operator's state files:\n" + "\n".join(read)
    assert_attack_failed(root, [result], "leak_env", ["loop-1/ADD-1"], findings=f)
