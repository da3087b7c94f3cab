"""docker-compose.yml and the Dockerfile, proven without a Docker engine.

`docker-compose config` (Debian's 1.29, which needs no engine) validates the file;
then every service's command is parsed by the real CLI parser, and each role's
command runs as a local process against the local Redis until its own health check
passes, and stops cleanly on SIGTERM, as `docker compose up` / `down` would do.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from cli.main import ROLES, build_parser
from tests.bus.protected import protected_redis_server
from tests.conftest import IN_CI, wait_until
from tests.deploy import compose
from tests.deploy.compose import CONTAINER_REDIS_URL, CONTAINER_REPO, ROOT, Service

SEED_PROJECT = ROOT / "tests" / "fixtures" / "seed-project"
TREE = compose.load()
SERVICES = {s.name: s for s in compose.services(TREE)}
OURS = [name for name, s in SERVICES.items() if s.is_ours]


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return binary


def _clean_env() -> dict[str, str]:
    """This environment without the variables the compose file reads."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOOPS_", "ANTHROPIC_", "GIT_")) and k != "REDIS_URL"
    }


# -- the file ---------------------------------------------------------------------------


def test_docker_compose_config_accepts_the_file_and_agrees_with_our_reading() -> None:
    result = subprocess.run(
        [_docker_compose(), "-f", str(compose.COMPOSE_FILE), "config"],
        env={**_clean_env(), **compose.HOST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    normalized = yaml.safe_load(result.stdout)["services"]
    assert normalized.keys() == SERVICES.keys()
    for name, service in SERVICES.items():
        theirs = Service(name, normalized[name])
        assert theirs.command == service.command, name
        assert theirs.entrypoint == service.entrypoint, name
        assert theirs.healthcheck == service.healthcheck, name
        # a pass-through variable (None here) takes the value the user exported
        ours = {
            key: compose.HOST_ENV.get(key) if value is None else value
            for key, value in compose.environment(service.spec).items()
        }
        assert compose.environment(normalized[name]) == ours, name


def test_without_a_redis_password_compose_refuses_to_start() -> None:
    with pytest.raises(compose.MissingVariable, match="set LOOPS_REDIS_PASSWORD"):
        compose.load({})
    result = subprocess.run(
        [_docker_compose(), "-f", str(compose.COMPOSE_FILE), "config"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "set LOOPS_REDIS_PASSWORD" in result.stderr


def test_the_password_comes_from_the_environment_and_stays_off_command_lines() -> None:
    """The file holds no secret value; the one the user exports reaches Redis (as
    `requirepass`), its health check and rq's URL, each role as a pass-through, and no
    command line of ours (where `ps` would show it)."""
    text = compose.COMPOSE_FILE.read_text()
    for name in ("LOOPS_REDIS_PASSWORD", "LOOPS_SIGNING_KEY"):
        for line in text.splitlines():
            code = line.split("#", 1)[0]
            if name in code:
                assert f"${{{name}" in code or code.strip() == f"{name}:", line
    secret = compose.HOST_ENV["LOOPS_REDIS_PASSWORD"]
    redis_service = SERVICES["redis"]
    assert redis_service.command[1:3] == ["--requirepass", secret]
    assert compose.environment(redis_service.spec)["REDISCLI_AUTH"] == secret
    for name in OURS:
        service = SERVICES[name]
        env = compose.environment(service.spec)
        assert env["LOOPS_REDIS_PASSWORD"] is None and env["LOOPS_SIGNING_KEY"] is None, name
        argv = [*service.entrypoint, *service.command, *service.healthcheck]
        assert not any(secret in arg for arg in argv), name
    assert compose.environment(SERVICES["rq"].spec)["RQ_REDIS_URL"] == (
        f"redis://:{secret}@redis:6379/0"
    )


def test_redis_keeps_its_data_and_reports_health() -> None:
    redis_service = SERVICES["redis"]
    assert redis_service.spec["image"] == "redis:7.0"
    assert redis_service.command[-2:] == ["--appendonly", "yes"]
    volume, _, target = redis_service.spec["volumes"][0].partition(":")
    assert target == "/data" and volume in TREE["volumes"]
    assert redis_service.healthcheck == ["redis-cli", "ping"]
    assert redis_service.spec["restart"] == "unless-stopped"


def test_every_role_has_a_service() -> None:
    commands = {
        SERVICES[name].command[0] for name in OURS if SERVICES[name].entrypoint == ["loops"]
    }
    assert set(ROLES) <= commands


@pytest.mark.parametrize("name", OURS)
def test_service_is_supervised_and_gets_its_settings_from_the_environment(name: str) -> None:
    spec = SERVICES[name].spec
    assert spec["restart"] == "unless-stopped"
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in spec
    assert any(v.endswith(":" + CONTAINER_REPO) for v in spec["volumes"])
    env = compose.environment(spec)
    assert env["REDIS_URL"] == CONTAINER_REDIS_URL
    for key, value in env.items():
        if re.search(r"KEY|TOKEN|SECRET|PASSWORD", key):
            assert value is None, f"{name}: {key} must be passed through, not written here"


def test_dashboard_is_published_and_listens_beyond_loopback() -> None:
    dashboard = SERVICES["dashboard"]
    args = build_parser().parse_args(dashboard.command)
    assert args.host == "0.0.0.0"
    assert any(str(p).endswith(f":{args.port}") for p in dashboard.spec["ports"])


def _check_rq_args(args: list[str], env: dict[str, str | None]) -> None:
    from rq.cli.cli import main as rq_main

    assert "--url" not in args and "-u" not in args, "the URL (with the password) is RQ_REDIS_URL"
    parent = click.Context(rq_main, info_name="rq")
    command = rq_main.get_command(parent, args[0])
    assert command is not None, f"rq has no command {args[0]!r}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RQ_REDIS_URL", str(env["RQ_REDIS_URL"]))
        params = command.make_context(args[0], args[1:], parent=parent).params
    assert params["url"] == env["RQ_REDIS_URL"]
    assert str(params["url"]).endswith("@" + CONTAINER_REDIS_URL.removeprefix("redis://"))
    assert params["queues"], "an rq worker must name its queue"
    if params.get("worker_class"):
        from rq.utils import import_attribute
        from rq.worker import BaseWorker

        worker_class = import_attribute(params["worker_class"])
        assert isinstance(worker_class, type) and issubclass(worker_class, BaseWorker)


@pytest.mark.parametrize("name", OURS)
def test_service_command_and_health_check_are_valid(name: str) -> None:
    service = SERVICES[name]
    if service.entrypoint == ["rq"]:
        _check_rq_args(service.command, compose.environment(service.spec))
    else:
        assert service.entrypoint == ["loops"]
        args = build_parser().parse_args(service.command)  # SystemExit fails the test
        assert args.command in ROLES
    program, *health_args = service.healthcheck
    assert program == "loops"
    assert build_parser().parse_args(health_args).command == "health"


def test_dockerfile_installs_the_pinned_claude_code_and_runs_loops_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms[-1].startswith("python:3.11-slim")
    pin = re.search(r"ARG CLAUDE_CODE_VERSION=(\d+\.\d+\.\d+)\s", text)
    assert pin, "the Claude Code version must be pinned exactly"
    assert "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" in text
    ci_pin = re.search(r"CLAUDE_CODE_VERSION=(\S+)", (ROOT / ".ci" / "run").read_text())
    assert ci_pin, ".ci/run no longer pins CLAUDE_CODE_VERSION: pin the image to its version"
    assert ci_pin[1] == pin[1], f".ci/run tests Claude Code {ci_pin[1]}, the image has {pin[1]}"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["loops"]' in lines
    assert not re.search(r"(ENV|ARG)\s+\S*(API_KEY|TOKEN|SECRET|PASSWORD)", text)


def test_build_context_holds_what_pip_install_needs() -> None:
    """`COPY . /tmp/src` then `pip install /tmp/src`: nothing the package build reads
    may be left out by .dockerignore."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = ["pyproject.toml", project["project"]["readme"], *packages]
    for path in needed:
        assert (ROOT / path).exists(), path
        excluded = [p for p in patterns if fnmatch.fnmatch(path, p.removeprefix("**/"))]
        assert not excluded, f"{path} is excluded from the image by {excluded}"
    assert {".git", ".venv"} <= set(patterns)


# -- the services, started as local processes ---------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The seed project as a git repository, its loops on an agent that asks a human
    (so a worker never reaches a real model)."""
    root = tmp_path / "repo"
    shutil.copytree(SEED_PROJECT, root)
    for config in root.glob("**/loop-*/config.json"):
        data = json.loads(config.read_text())
        data["agent"] = "command:echo BLOCKED: the compose test has no agent"
        config.write_text(json.dumps(data, indent=2))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(root)]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "seed"]):
        subprocess.run([*git, *args], check=True, capture_output=True, timeout=30)
    return root


@pytest.fixture
def local(repo: Path, tmp_path: Path) -> Iterator[compose.Local]:
    """The services' Redis: a redis-server of this test's own that needs the password
    (as compose's does), which the services get as the user exported it."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with protected_redis_server(tmp_path) as (url, password):
        yield compose.Local(repo=repo, redis_url=url, prefix=prefix, port=port, password=password)


@pytest.mark.parametrize("name", OURS)
def test_service_starts_becomes_healthy_and_stops_cleanly(
    name: str, local: compose.Local, tmp_path: Path
) -> None:
    service = SERVICES[name]
    env = local.env(service, os.environ)
    health = local.argv(service.healthcheck)
    log_path = tmp_path / f"{name}.log"

    def output() -> str:
        return log_path.read_text()[-3000:]

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"{name} exited ({proc.returncode}) before it was healthy:\n{output()}"
            )
        return subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0

    with log_path.open("w") as log:
        proc = subprocess.Popen(
            local.argv([*service.entrypoint, *service.command]),
            env=env,
            cwd=local.cwd(service),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Each check is a `loops health` process, as in the container; poll gently.
        wait_until(healthy, timeout=60, interval=1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=service.stop_grace_s())
        assert code == 0, f"{name} exited {code} on SIGTERM:\n{output()}"
        if service.entrypoint == ["loops"]:
            gone = subprocess.run(health, env=env, capture_output=True, timeout=30)
            assert gone.returncode == 1, f"{name} left its presence behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
