"""Helpers to run the REAL Claude Code CLI against the mock Messages API.

`.ci/run` installs the pinned CLI into `.ci/node/`. `find_claude()` skips the calling
test when the CLI is missing, or fails it under CI=true. `claude_cli_env()` is the
environment that keeps the CLI on the mock and off the network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PINNED = REPO / ".ci" / "node" / "node_modules" / ".bin" / "claude"
MOCK_KEY = "sk-ant-api03-mock-" + "q" * 32


def find_claude() -> str:
    """The pinned CLI (else `claude` on PATH); skip, or fail under CI=true, without one."""
    if PINNED.exists():
        return str(PINNED)
    found = shutil.which("claude")
    if found:
        return found
    message = "the Claude Code CLI is not installed: run .ci/run (it installs it into .ci/node/)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def claude_cli_env(base_url: str, config_dir: Path) -> dict[str, str]:
    """What the CLI needs to talk to the mock at `base_url` only, with its own config dir."""
    config_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": MOCK_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "DISABLE_AUTOUPDATER": "1",
    }
    if os.geteuid() == 0:  # the CLI refuses --dangerously-skip-permissions as root otherwise
        env["IS_SANDBOX"] = "1"
    return env
