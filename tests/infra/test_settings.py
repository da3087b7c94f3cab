"""The one `Settings`: every variable read in one place, typed, secrets hidden."""

from __future__ import annotations

import ast
from pathlib import Path

from bus.settings import derive_signing_key
from events.secrets import redact
from infra.settings import Settings, secret

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_read_nothing_and_empty_variables_count_as_unset() -> None:
    assert Settings() == Settings.from_env({})
    blank = Settings.from_env({"LOOPS_PREFIX": "", "REDIS_URL": "  ", "LOOPS_JUDGE_MODEL": ""})
    assert blank.prefix == "loops" and blank.redis_url is None and blank.judge_model is None
    assert Settings().job_processes and not Settings().has_model_api


def test_each_field_is_read_from_its_variable() -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://h:1/2",
            "LOOPS_PREFIX": "demo",
            "CODING_LOOP_PROJECT_DIR": "/p",
            "LOOPS_REMOTE": "origin",
            "LOOPS_JOB_PROCESSES": "0",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "LOOPS_CLAUDE_ARGS": "--allowedTools 'Bash(pytest *)'",
            "LOOPS_WEBHOOK_URLS": "http://a, http://b,",
            "UNRELATED": "x",
        }
    )
    assert (s.redis_url, s.prefix, s.project_dir, s.remote) == (
        "redis://h:1/2",
        "demo",
        "/p",
        "origin",
    )
    assert not s.job_processes and s.has_model_api
    assert s.claude_args == "--allowedTools 'Bash(pytest *)'"
    assert s.webhook_targets == ["http://a", "http://b"]
    # a flag over its variable; None leaves the variable's value
    assert s.with_(remote="upstream", prefix=None).remote == "upstream"
    assert s.with_(prefix=None).prefix == "demo"


def test_secrets_never_show_and_are_redacted() -> None:
    key = "sk-ant-api03-" + "q" * 40
    s = Settings.from_env({"ANTHROPIC_API_KEY": key, "LOOPS_WEBHOOK_SECRET": "whsec-" + "w" * 20})
    assert key not in repr(s) and key not in str(s)
    assert s.api_key == key and secret(s.webhook_secret) == "whsec-" + "w" * 20
    assert key not in redact(f"the key is {key}")


def test_bus_settings_come_from_the_same_object() -> None:
    s = Settings.from_env(
        {"REDIS_URL": "redis://redis:6379/0", "LOOPS_REDIS_PASSWORD": "pw-" + "p" * 20}
    )
    bus = s.with_(prefix="p1").bus_settings()
    assert bus.url == "redis://redis:6379/0" and bus.prefix == "p1"
    assert bus.signing_key == derive_signing_key("pw-" + "p" * 20)
    assert Settings().bus_settings().url == "redis://127.0.0.1:6379/0"
    assert Settings().bus_settings().signing_key is None


def test_only_the_settings_module_and_the_agent_environment_read_os_environ() -> None:
    """The issue's "done when": `os.environ` is read here, and where the agent's own
    environment is built (the allow-list, the sandbox, and the account the agent's
    credentials belong to)."""
    allowed = {"events/secrets.py", "loops/sandbox.py", "loops/runners/account.py"}
    found = set()
    for package in ("events", "bus", "loops", "gates", "agents", "app", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in ("environ", "getenv")
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "os"
                ):
                    found.add(str(path.relative_to(ROOT)))
    # the git layers strip GIT_DIR from a child's environment (moving to infra/)
    found -= {"loops/workspace.py", "gates/gitutil.py"}
    assert found <= allowed, sorted(found - allowed)


PRODUCT = ("events", "bus", "infra", "loops", "gates", "agents", "app", "cli")
# Where the environment becomes `Settings`: the command line, and the rq jobs, which run
# in another process on another host and so read that host's environment.
READ_AT = {"cli/main.py", "cli/context.py", "loops/jobs.py", "gates/jobs.py"}
# Library fallbacks still reading it, each until its caller passes its settings down:
# `make_runner` (for `loops/jobs.py`'s runner), `policy_file` and `run_fleet` (app/).
NOT_YET: set[str] = set()


def reads_settings_from_env(source: str) -> bool:
    """Whether `source` calls (or names, as a default factory) `Settings.from_env`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "from_env":
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name == "Settings":
                return True
    return False


def test_settings_are_built_from_the_environment_only_at_the_entry_points() -> None:
    """The issue: settings are "built once from the CLI and the environment and passed
    down"; a library that needs a setting takes it as an argument."""
    found = {
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if reads_settings_from_env(path.read_text())
    }
    assert found - READ_AT <= NOT_YET, sorted(found - READ_AT - NOT_YET)


def test_the_entry_point_check_sees_a_call_and_a_default_factory() -> None:
    assert reads_settings_from_env("x = settings or Settings.from_env()\n")
    assert reads_settings_from_env(
        "s: Settings = field(default_factory=infra.settings.Settings.from_env)"
    )
    assert not reads_settings_from_env("b = BusSettings.from_env(env)\ns = Settings()\n")
