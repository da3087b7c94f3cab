"""One typed `Settings`: every environment variable coding-loops reads, in one place.

The CLI builds it once (`Settings.from_env()`, then the flags with `with_()`) and
passes it down: to the bus (`bus_settings()`, `resolve_bus()`), the runners, the
judge, the refiner, the answer reader and the notifier. Nothing else reads
`os.environ`, except the agent's environment builder (`events.secrets.allowed_env`
and the sandbox), which passes the operator's allow-listed variables to the agent.

Why a pydantic model and not pydantic-settings' `BaseSettings`: we need the fields
typed and validated and the variable names declared once (the aliases), which pydantic
already gives; `from_env(mapping)` reads an explicit mapping, so a test builds one
without touching the process (no monkeypatch), and `Settings()` is the defaults with
no hidden read of the environment. pydantic-settings would add a dependency for
dotenv and secrets directories we do not use.

Secrets (`SecretStr`) never show in `repr()` and are registered with `events.secrets`,
so `redact()` masks them wherever they are printed (DESIGN.md invariant 7).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bus import BusSettings
from bus.settings import PASSWORD_ENV, SIGNING_KEY_ENV, url_password
from events import ConfigError
from events.secrets import register_secret
from infra.embedded import resolve_settings

__all__ = ["Settings", "secret"]


def secret(value: SecretStr | None) -> str | None:
    """The text of a secret setting, or None when unset or empty."""
    return (value.get_secret_value() or None) if value is not None else None


class Settings(BaseModel):
    """The process's settings: each field is read from the environment variable named
    by its alias."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, extra="ignore")

    # -- reaching the system
    redis_url: str | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description="Redis of a distributed system (what docker-compose sets). Unset: the "
        "embedded server of the project.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        validation_alias=PASSWORD_ENV,
        description="Password of that Redis when `REDIS_URL` has none (compose requires it). "
        "Embedded: a random one in `.loops/redis.auth` (0600).",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        validation_alias=SIGNING_KEY_ENV,
        description="Key (hex, >= 16 bytes) every role signs events with; decisions without "
        "a valid signature are dropped. Unset: derived from the Redis password. Embedded: "
        "`.loops/signing.key` (0600).",
    )
    prefix: str = Field(
        default="loops",
        validation_alias="LOOPS_PREFIX",
        description="Key prefix of every Redis key and stream: several systems on one Redis.",
    )
    project_dir: str | None = Field(
        default=None,
        validation_alias="CODING_LOOP_PROJECT_DIR",
        description="The project directory (the seed's variable) when no DIR or `--dir` is "
        "given; `specs_dir` is resolved against it.",
    )
    remote: str | None = Field(
        default=None,
        validation_alias="LOOPS_REMOTE",
        description="Git remote the gate, merge queue and workers share in distributed mode "
        "(e.g. `origin`).",
    )
    job_processes: bool = Field(
        default=True,
        validation_alias="LOOPS_JOB_PROCESSES",
        description="`0`: `loops up` verifies in the gate's thread instead of in worker "
        "processes (one per core).",
    )
    # -- the model API
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="ANTHROPIC_API_KEY",
        description="For the `anthropic` agent, the judge of natural checks, the monitor's "
        "task refiner and the answer reader. Never logged.",
    )
    anthropic_auth_token: SecretStr | None = Field(
        default=None,
        validation_alias="ANTHROPIC_AUTH_TOKEN",
        description="Instead of `ANTHROPIC_API_KEY`, for the `anthropic` agent.",
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias="ANTHROPIC_BASE_URL",
        description="The Messages API's address (a proxy, a gateway, a test server).",
    )
    judge_model: str | None = Field(
        default=None,
        validation_alias="LOOPS_JUDGE_MODEL",
        description="Model that judges natural checks and reads free-text answers "
        "(default: claude-sonnet-4-6).",
    )
    refine_model: str | None = Field(
        default=None,
        validation_alias="LOOPS_REFINE_MODEL",
        description="Model of the monitor's task refiner (default: claude-sonnet-4-6).",
    )
    # -- the claude agent
    claude_bin: str | None = Field(
        default=None,
        validation_alias="LOOPS_CLAUDE_BIN",
        description="The Claude Code CLI binary for the `claude` agent (default `claude` on PATH).",
    )
    claude_args: str = Field(
        default="",
        validation_alias="LOOPS_CLAUDE_ARGS",
        description="Extra arguments for every `claude` run, shell-quoted (e.g. "
        '`--allowedTools "Bash(pytest *)"`).',
    )
    claude_permission_mode: str | None = Field(
        default=None,
        validation_alias="LOOPS_CLAUDE_PERMISSION_MODE",
        description="Claude Code's permission mode (default `acceptEdits`), or `skip` for "
        "`--dangerously-skip-permissions`.",
    )
    is_sandbox: str | None = Field(
        default=None,
        validation_alias="IS_SANDBOX",
        description="Passed to the `claude` agent when set (Claude Code skips permission "
        "prompts as root only with `IS_SANDBOX=1`).",
    )
    # -- the monitor and the agents' hosts
    monitor_policy: str | None = Field(
        default=None,
        validation_alias="LOOPS_MONITOR_POLICY",
        description="The monitor's policy file (default: `monitor-policy.yaml` beside the "
        "loop directories, if any); it names only what it changes of "
        "`agents/default-policy.yaml`, e.g. `thresholds: {silent_agent_after_s: 300}`.",
    )
    agent_queue: str | None = Field(
        default=None,
        validation_alias="LOOPS_AGENT_QUEUE",
        description="rq queue a distributed loop's agent iterations run on (compose: "
        "`loops-agents`); any `rq worker -w cli.rqworker.SimpleWorker QUEUE` on any host runs "
        "them. Unset: in the loop's own process.",
    )
    agent_home: str | None = Field(
        default=None,
        validation_alias="LOOPS_AGENT_HOME",
        description="Where an agent host (an rq worker on the agent queue) keeps its clones "
        "of the remote (default `~/.cache/coding-loops/agents`).",
    )
    # -- operator interfaces
    dashboard_token: SecretStr | None = Field(
        default=None,
        validation_alias="LOOPS_DASHBOARD_TOKEN",
        description="Token for the dashboard's actions; else one is generated into "
        "`.loops/dashboard.token`.",
    )
    webhook_urls: str = Field(
        default="",
        validation_alias="LOOPS_WEBHOOK_URLS",
        description="Comma-separated URLs that get escalation notifications.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="LOOPS_WEBHOOK_SECRET",
        description="Key the webhook notifications are HMAC-SHA256 signed with.",
    )
    metrics_port: str | None = Field(
        default=None,
        validation_alias="LOOPS_METRICS_PORT",
        description="Serve Prometheus metrics on this port when `--metrics-port` is not "
        "given (0 = a free port).",
    )
    metrics_host: str | None = Field(
        default=None,
        validation_alias="LOOPS_METRICS_HOST",
        description="Address of /metrics when `--metrics-host` is not given (default 127.0.0.1).",
    )

    @field_validator("job_processes", mode="before")
    @classmethod
    def _zero_is_off(cls, value: Any) -> Any:
        # As before: anything but `0` (and the usual words for no) leaves it on.
        if isinstance(value, str):
            return value.strip().lower() not in {"0", "false", "no", "off"}
        return value

    @field_validator("prefix", mode="before")
    @classmethod
    def _default_prefix(cls, value: Any) -> Any:
        return value or "loops"

    def model_post_init(self, __context: Any) -> None:
        for name, value in self:
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value() or None)
            elif name == "redis_url" and value:
                register_secret(url_password(value))

    # ------------------------------------------------------------------ building it
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings of `environ` (default: this process's environment): an empty
        variable counts as unset. `overrides` (field names) win. A bad value is one
        `ConfigError` naming the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in cls.variables().items():
            raw = env.get(var, "")
            if raw.strip():
                values[name] = raw.strip() if name != "claude_args" else raw
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            names = cls.variables()
            first = exc.errors()[0]
            name = names.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else ""
            raise ConfigError(f"environment variable {name}: {first['msg']}") from None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name -> the environment variable it is read from."""
        return {name: str(f.validation_alias or name) for name, f in cls.model_fields.items()}

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (a flag over its variable); None is ignored."""
        return self.model_copy(update={k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------ derived values
    @property
    def api_key(self) -> str | None:
        return secret(self.anthropic_api_key)

    @property
    def has_model_api(self) -> bool:
        """Whether a model API is configured (a key, or a base URL that may need none)."""
        return bool(self.api_key or self.anthropic_base_url)

    @property
    def webhook_targets(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    def bus_env(self) -> dict[str, str]:
        """The bus's variables as `bus` reads them (`BusSettings.from_env`,
        `infra.embedded.resolve_settings`): only what is set."""
        pairs = {
            "REDIS_URL": self.redis_url,
            "LOOPS_PREFIX": self.prefix,
            PASSWORD_ENV: secret(self.redis_password),
            SIGNING_KEY_ENV: secret(self.signing_key),
        }
        return {k: v for k, v in pairs.items() if v}

    def bus_settings(self, **overrides: Any) -> BusSettings:
        """`BusSettings` for `REDIS_URL` (default redis://127.0.0.1:6379/0), with this
        prefix, password and signing key; `overrides` are `BusSettings` fields."""
        return BusSettings.from_env(self.bus_env(), **overrides)

    def resolve_bus(
        self,
        explicit_url: str | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> BusSettings:
        """How to reach the running system (`infra.embedded.resolve_settings`): `--redis`, else
        `REDIS_URL`, else the embedded server of `project_dir` (default: the
        `CODING_LOOP_PROJECT_DIR` setting)."""
        overrides.setdefault("prefix", self.prefix)
        return resolve_settings(
            explicit_url, project_dir or self.project_dir, self.bus_env(), **overrides
        )
