"""Which account a runner's calls go to, for the account-wide usage windows
(`bus.usage`; contract 2 in agents/README.md)."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping

from bus.usage import account_key
from loops.runners import AgentRunner

__all__ = ["agent_account"]


def agent_account(
    runner: AgentRunner, *, name: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The `account_key` of `runner`'s calls, or None for `script:` (no account).

    `claude`: its API key or OAuth token when set, else the operator's config dir
    (`CLAUDE_CONFIG_DIR`, else `~/.claude`) where a logged-in CLI keeps its account.
    `anthropic`: the API key and `ANTHROPIC_BASE_URL`. `command:`: the command line
    with its program resolved on PATH (different programs, different accounts).
    `name` (config.json's `account`) replaces the credentials: loops naming the same
    account share one window."""
    env = os.environ if environ is None else environ
    kind = runner.name.partition(":")[0]
    if kind == "claude":
        secret = env.get("ANTHROPIC_API_KEY") or env.get("CLAUDE_CODE_OAUTH_TOKEN") or None
        config_dir = None if secret else (env.get("CLAUDE_CONFIG_DIR") or "~/.claude")
        return account_key("claude", secret=secret, config_dir=config_dir, name=name)
    if kind == "anthropic":
        return account_key(
            "anthropic",
            secret=env.get("ANTHROPIC_API_KEY") or None,
            base_url=env.get("ANTHROPIC_BASE_URL") or None,
            name=name,
        )
    if kind == "command":
        command = str(getattr(runner, "command", runner.name))
        try:
            words = shlex.split(command)
        except ValueError:
            words = command.split()
        if words:
            words[0] = shutil.which(words[0]) or words[0]
        return account_key("command", name=name or shlex.join(words))
    return None
