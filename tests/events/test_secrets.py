"""events.secrets: what counts as a secret, how it is hidden, what untrusted code gets."""

from __future__ import annotations

import pytest

from events.secrets import MASK, allowed_env, redact, redact_obj, register_secret


@pytest.mark.parametrize(
    "token",
    [
        "sk-ant-api03-abcdefghijklmnop",
        "ghp_" + "a" * 36,
        "github_pat_" + "B" * 30,
        "xoxb-1234567890-abcdef",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_known_token_shapes_are_hidden(token: str) -> None:
    assert redact(f"key={token} end", env={}) == f"key={MASK} end"


def test_values_of_secret_looking_variables_are_hidden_whatever_they_look_like() -> None:
    env = {
        "PGPASSWORD": "plain words here",
        "GITHUB_PAT": "abcdefgh1234",
        "MY_API_KEY": "zzzzzzzzzz",
        "LOOPS_WEBHOOK_SECRET": "hush-hush-hush",
        "HOME": "/root/home-dir",
    }
    text = "plain words here abcdefgh1234 zzzzzzzzzz hush-hush-hush /root/home-dir"
    assert redact(text, env=env) == f"{MASK} {MASK} {MASK} {MASK} /root/home-dir"


def test_a_password_in_a_url_is_hidden_alone_and_in_place() -> None:
    env = {"REDIS_URL": "redis://:s3cretpass@127.0.0.1:6379/0"}
    assert "s3cretpass" not in redact("auth failed for s3cretpass", env=env)
    assert "s3cretpass" not in redact("redis://user:s3cretpass@host:1/0", env={})


def test_registered_secrets_are_hidden_everywhere() -> None:
    register_secret("a-file-token-123456")
    assert redact("token a-file-token-123456", env={}) == f"token {MASK}"


def test_redact_obj_walks_json_like_values() -> None:
    value = {"a": ["sk-ant-api03-abcdefghijklmnop", 3], "b": {"c": None}}
    assert redact_obj(value, env={}) == {"a": [MASK, 3], "b": {"c": None}}


def test_untrusted_programs_get_an_allow_list_never_the_harness_credentials() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "REDIS_URL": "redis://:pw@h:1/0",
        "LOOPS_REDIS_PASSWORD": "pw",
        "LOOPS_WEBHOOK_SECRET": "s",
        "GITHUB_TOKEN": "t",
        "PGPASSWORD": "p",
        "GIT_DIR": "/elsewhere",
        "RANDOM_THING": "x",
    }
    check = allowed_env(base)
    assert check == {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    agent = allowed_env(base, agent=True, passthrough=["GITHUB_TOKEN", "LOOPS_*", "REDIS_URL"])
    assert agent == {**check, "ANTHROPIC_API_KEY": "sk-ant-x", "GITHUB_TOKEN": "t"}
    assert allowed_env(base, extra={"LOOPS_LOOP": "a"})["LOOPS_LOOP"] == "a"
