"""Secrets: how to recognise them, hide them, and keep them out of what untrusted code
sees (DESIGN.md invariants 7 and 8).

Three nets, used by every role:

- `redact(text)`: the values of secret-looking environment variables, whatever they
  look like, and well-known token shapes (Anthropic, OpenAI, GitHub, Slack, AWS, JWTs,
  bearer headers, passwords in URLs) for secrets that never passed through our
  environment;
- `redact_obj(value)`: the same over every string of a JSON-like value (event fields,
  state files);
- `allowed_env(...)`: the environment an agent or a check gets: an allow-list of
  what programs need to work, never the harness's own credentials.

Imports nothing of the project: events, bus, loops, gates, agents and cli all use it.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"

# Names of variables whose values are secrets: `*_TOKEN`, `*_KEY`, `*_SECRET`,
# `*PASSWORD*`, `*_PAT`, credentials, cookies, auth, and URLs that carry a password.
_SECRET_NAME = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|PRIVATE|_PAT$|^PAT$|"
    r"^REDIS_URL$|^DATABASE_URL$|_DSN$)",
    re.IGNORECASE,
)
# Shorter values are too likely to be ordinary words ("true", "1234").
_MIN_SECRET_LEN = 8

_TOKEN_SHAPES = re.compile(
    r"""
    sk-ant-[A-Za-z0-9_\-]{8,}                       # Anthropic keys
  | sk-(?:proj-)?[A-Za-z0-9_\-]{20,}                # OpenAI-style keys
  | gh[pousr]_[A-Za-z0-9]{20,}                      # GitHub tokens
  | github_pat_[A-Za-z0-9_]{20,}
  | glpat-[A-Za-z0-9_\-]{20,}                       # GitLab
  | xox[abprs]-[A-Za-z0-9\-]{10,}                   # Slack
  | (?:AKIA|ASIA)[0-9A-Z]{16}                       # AWS access key id
  | eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}  # JWTs
  | (?<=[Bb]earer\s)[A-Za-z0-9._\-~+/=]{12,}        # Authorization: Bearer ...
  | (?<=x-api-key:\s)\S{8,}
  | (?<=://)[^/\s:@]*:[^/\s@]{4,}(?=@)              # user:password@ in a URL
    """,
    re.VERBOSE,
)
# Every alternative of _TOKEN_SHAPES needs one of these literals: keep them in step
# (tests/bus/test_redaction.py checks a sample of each shape).
_TOKEN_ANCHORS = (
    "sk-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "AKIA",
    "ASIA",
    "eyJ",
    "earer",
    "x-api-key:",
    "://",
)

# What any program needs to run: the agent's tools and the project's checks.
BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
    "NODE_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
# What an agent additionally needs: its own model credentials and settings. These are
# the agent's, not the harness's; they are still redacted wherever they are printed.
AGENT_ENV = (
    "ANTHROPIC_*",
    "CLAUDE_*",
    "CLAUDECODE",
    "DISABLE_*",
    "OPENAI_*",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
)
# Never passed to an agent or a check, whatever a pattern or a passthrough says: the
# harness's own credentials and anything that redirects git.
_NEVER = re.compile(
    r"^(LOOPS_(?!AGENT_ARGS$).*|REDIS_.*|RQ_.*|GIT_DIR|GIT_WORK_TREE|GIT_INDEX_FILE|"
    r"GIT_OBJECT_DIRECTORY|GIT_ALTERNATE_OBJECT_DIRECTORIES|GIT_COMMON_DIR|GIT_CONFIG.*|"
    r"GIT_ASKPASS|SSH_AUTH_SOCK|SSH_ASKPASS|DOCKER_HOST)$"
)


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a variable called `name` holds a secret (`*_TOKEN`, `*_KEY`, ...)."""
    return bool(_SECRET_NAME.search(name))


def _scan_values(source: Mapping[str, str]) -> list[str]:
    values = {
        value
        for name, value in source.items()
        if is_secret_name(name) and len(value) >= _MIN_SECRET_LEN
    }
    for value in list(values):  # a URL's password on its own, too
        match = re.search(r"://[^/\s:@]*:([^/\s@]+)@", value)
        if match and len(match.group(1)) >= 4:
            values.add(match.group(1))
    return sorted(values, key=len, reverse=True)


@functools.lru_cache(maxsize=4096)
def _is_secret_name_bytes(name: bytes) -> bool:
    return is_secret_name(name.decode("utf-8", "replace"))


class _Needles:
    """The literal values to hide, cached against this process's environment and the
    registered secrets: publishing an event checks them, and rescanning the whole
    environment each time would cost more than the rest of a publish."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._names: frozenset[Any] = frozenset()  # every variable name, last scan
        self._secret_names: tuple[Any, ...] = ()  # those that look secret
        self.values: list[str] = []
        self.escaped: list[str] = []  # the same, as they appear inside JSON strings

    def current(self) -> _Needles:
        data: Any = getattr(os.environ, "_data", None)
        if not isinstance(data, dict):  # not CPython's os.environ: decode every time
            data = dict(os.environ)
        if data.keys() != self._names:  # a variable came or went (one C-level compare)
            self._names = frozenset(data)
            self._secret_names = tuple(
                k
                for k in data
                if (_is_secret_name_bytes(k) if isinstance(k, bytes) else is_secret_name(k))
            )
        key = (tuple(data.get(k) for k in self._secret_names), len(_extra_secrets))
        if key != self._key:
            values = sorted({*_scan_values(os.environ), *_extra_secrets}, key=len, reverse=True)
            escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in values]
            self.values = values
            self.escaped = [e for e, v in zip(escaped, values, strict=True) if e != v]
            self._key = key
        return self


_needles = _Needles()


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of secret-looking variables in `env` (default: os.environ), longest first."""
    return _scan_values(os.environ if env is None else env)


_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Hide `value` everywhere from now on (a password or token this process made or
    read from a file, not from its environment)."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def _may_hold_token(text: str) -> bool:
    """False only when no `_TOKEN_SHAPES` pattern can match `text` (each needs one of
    these literals): a substring search is much cheaper than the regex."""
    return any(anchor in text for anchor in _TOKEN_ANCHORS)


def redact(text: str, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """`text` with every secret replaced by `[REDACTED]`.

    `env` defaults to os.environ; pass the agent's own environment when it differs.
    `extra` adds literal values to hide (registered secrets are always hidden).
    """
    if not text:
        return text
    known = _needles.current().values if env is None else [*_scan_values(env), *_extra_secrets]
    values = [*known, *extra] if extra else known
    for value in sorted(set(values), key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, MASK)
    return _TOKEN_SHAPES.sub(MASK, text) if _may_hold_token(text) else text


def contains_secret(
    text: str, env: Mapping[str, str] | None = None, *, json_escaped: bool = False
) -> bool:
    """Whether `redact(text, env)` would change `text`: a cheap test before redacting
    (one substring search per known value, a few for token shapes, the regex only
    when one of those hits). With `json_escaped`, a value is also looked for as it
    appears inside a JSON string (quotes, backslashes, control characters escaped)."""
    if not text:
        return False
    if env is None:
        needles = _needles.current()
        values, escaped = needles.values, needles.escaped if json_escaped else []
    else:
        values = [*_scan_values(env), *_extra_secrets]
        escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in values] if json_escaped else []
    if any(v in text for v in values) or any(e in text for e in escaped):
        return True
    return _may_hold_token(text) and _TOKEN_SHAPES.search(text) is not None


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record (message, arguments and
    traceback) before any handler writes it. Install it on handlers, not loggers:
    a logger's filters do not see records propagated from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: keep what there is
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a `RedactingFilter` to every handler of `logger` (default: the root logger)
    that has none yet. Call it after configuring handlers."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def redact_obj(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """`value` (a JSON-like structure) with every string redacted; other values as they are."""
    # The secret values once per call, not once per string; and each string once per
    # set of values (state files are written again and again with mostly the same text).
    if env is None:
        values = tuple(_needles.current().values)  # cached against os.environ
    else:
        values = tuple(sorted({*secret_values(env), *_extra_secrets}, key=len, reverse=True))
    return _redact_all(value, values)


def _redact_all(value: Any, values: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _redact_text(value, values) if value else value
    if isinstance(value, Mapping):
        return {k: _redact_all(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_all(v, values) for v in value]
    return value


@functools.lru_cache(maxsize=2048)
def _redact_text(text: str, values: tuple[str, ...]) -> str:
    for value in values:
        if value and value in text:
            text = text.replace(value, MASK)
    return _TOKEN_SHAPES.sub(MASK, text) if _may_hold_token(text) else text


def allowed_env(
    base: Mapping[str, str] | None = None,
    *,
    agent: bool = False,
    passthrough: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for an untrusted program (an agent, or a check when `agent` is
    False): the variables of `base` (default: os.environ) named by `BASE_ENV` (and
    `AGENT_ENV` for an agent) or by `passthrough` (names or globs the operator listed),
    never the harness's own (`LOOPS_*`, `REDIS_*`, git redirects); then `extra`, which
    the harness sets itself (`LOOPS_LOOP`, `TMPDIR`, ...)."""
    source = os.environ if base is None else base
    patterns = [*BASE_ENV, *(AGENT_ENV if agent else ()), *passthrough]
    env = {
        name: value
        for name, value in source.items()
        if not _NEVER.match(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    env.update(extra or {})
    return env
