"""`loops status` and `loops events` as an operator runs them: real subprocesses against
the real Redis, with the events published by the test."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading

import events as ev
from app.runtime import PresenceBeat
from bus import RedisBus
from infra.embedded import EmbeddedServer, recorded_url
from tests.cli.conftest import LOOPS, System
from tests.cli.sample import W, heartbeat, scenario
from tests.conftest import wait_until


class Lines:
    """Collects a process's stdout lines in a thread, so the test can wait on them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=10)
        finally:
            self.proc.kill()
            self._thread.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return code


def test_status_on_an_empty_system_says_so(system: System) -> None:
    proc = system.loops("status", check=True)
    assert "No events" in proc.stdout


def test_status_table_shows_loops_tasks_escalations_and_merge_queue(system: System) -> None:
    system.bus.publish_many(scenario())
    out = system.loops("status", check=True).stdout
    assert re.search(r"loop-api\s+waiting\s+healthy\s+API-2\s+1\s+1/3", out), out
    assert re.search(r"loop-ui\s+running\s+healthy\s+UI-1\s+3\s+0/2", out), out
    # `attempts` counts failed attempts: API-1 merged on its first claim.
    assert re.search(r"loop-api\s+API-1\s+merged\s+0", out), out
    assert re.search(r"loop-ui\s+UI-2\s+failed\s+1\s+verification failed", out), out
    assert "ESCALATIONS (1 open)" in out and "e-1a2b3c" in out and "404 or 410" in out
    assert re.search(r"merging\s+loop-ui\s+UI-1\s+cccc2222", out), out
    assert "reset_task" in out
    assert "$0.42" in out
    assert "Spend: $0.4200 on 1 merged task(s) ($0.4200 per merged task)" in out


def test_status_json(system: System) -> None:
    system.bus.publish_many(scenario())
    data = json.loads(system.loops("status", "--json", check=True).stdout)
    api = data["loops"]["loop-api"]
    assert api["status"] == "waiting" and api["health"] == "healthy"
    assert api["tasks"]["API-1"]["status"] == "merged"
    assert api["tasks"]["API-1"]["verification"]["criteria"][0]["passed"] is True
    assert data["loops"]["loop-ui"]["tasks"]["UI-2"]["verification"]["verdict"] == "checks_failed"
    assert data["escalations"]["e-1a2b3c"]["status"] == "open"
    assert data["totals"]["open_escalations"] == 1
    assert data["totals"]["cost_usd"] == 0.42
    (row,) = data["spend"]["receipts"]
    assert row["loop"] == "loop-api" and row["receipt"]["task_id"] == "API-1"
    assert (row["receipt"]["cost_usd"], row["receipt"]["agent_calls"]) == (0.42, 1)
    assert (row["receipt"]["tokens_in"], row["receipt"]["tokens_out"]) == (12000, 3000)
    assert data["spend"]["cost_per_merged_task"] == 0.42
    assert data["spend"]["unmerged_cost_usd"] == 0.0
    assert [p["cost_usd"] for p in data["spend"]["series"]["loop-api"]] == [0.42]
    assert [m["task_id"] for m in data["merges"] if m["status"] == "merging"] == ["UI-1"]


def test_status_watch_redraws_on_new_events_until_ctrl_c(system: System) -> None:
    system.bus.publish_many(scenario())
    watch = Lines(system.popen("status", "--watch"))
    try:
        wait_until(lambda: "loop-api" in watch.text())
        assert "loop-new" not in watch.text()
        system.bus.publish(heartbeat("loop-new", task_id="NEW-1"))
        wait_until(lambda: "loop-new" in watch.text())
    finally:
        code = watch.interrupt()
    assert code == 0


def test_status_cannot_reach_redis_is_one_line(system: System) -> None:
    system.url = "redis://127.0.0.1:1/0"
    proc = system.loops("status")
    assert proc.returncode == 1
    assert (
        proc.stderr.count("\n") == 1
        and "cannot reach Redis at redis://127.0.0.1:1/0" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_events_one_line_per_event(system: System) -> None:
    history = scenario()
    system.bus.publish_many(history)
    lines = system.loops("events", check=True).stdout.splitlines()
    assert len(lines) == len(history)
    assert re.match(r"^\d\d:\d\d:\d\d loop-api loop.started agent=claude pid=101 ", lines[0]), (
        lines[0]
    )
    assert any(
        re.match(
            r'^\d\d:\d\d:\d\d loop-ui task.failed task_id=UI-2 attempt=1 reason="verification failed"$',
            x,
        )
        for x in lines
    )


def test_events_filters_by_type_glob_and_loop(system: System) -> None:
    system.bus.publish_many(scenario())
    lines = system.loops(
        "events", "--type", "task.*", "--loop", "loop-ui", check=True
    ).stdout.splitlines()
    assert lines and all(" loop-ui task." in x for x in lines)
    assert [x.split()[2] for x in lines] == ["task.started", "task.failed", "task.started"]
    both = system.loops(
        "events", "--type", "merge.queued", "--type", "escalation.raised", check=True
    )
    assert [x.split()[2] for x in both.stdout.splitlines()] == [
        "merge.queued",
        "escalation.raised",
        "merge.queued",
    ]


def test_events_json_roundtrips_and_since_a_stream_id(system: System) -> None:
    history = scenario()
    ids = system.bus.publish_many(history)
    out = system.loops("events", "--json", check=True).stdout.splitlines()
    assert [ev.decode_json(x) for x in out] == history
    tail = system.loops("events", "--json", "--since", ids[-2], check=True).stdout.splitlines()
    assert [ev.decode_json(x).id for x in tail] == [e.id for e in history[-2:]]
    recent = system.loops("events", "--since", "10m", check=True).stdout.splitlines()
    assert len(recent) == len(history)


def test_events_unknown_type_is_one_clear_line(system: System) -> None:
    proc = system.loops("events", "--type", "tsak.*")
    assert proc.returncode == 1
    assert proc.stderr.startswith("loops: --type 'tsak.*' matches no event type; known: ")
    assert proc.stderr.count("\n") == 1
    bad = system.loops("events", "--since", "yesterday-ish")
    assert bad.returncode == 1 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_events_follow_prints_new_events_as_they_come(system: System) -> None:
    system.bus.publish_many(scenario()[:2])
    follow = Lines(system.popen("events", "--follow", "--type", "task.*"))
    try:
        wait_until(lambda: follow.proc.poll() is None)
        system.bus.publish(ev.TaskStarted(source=W, loop="loop-api", task_id="API-9", attempt=1))
        system.bus.publish(heartbeat("loop-api"))  # filtered out
        system.bus.publish(
            ev.TaskFailed(source=W, loop="loop-api", task_id="API-9", attempt=1, reason="nope")
        )
        wait_until(lambda: len(follow.lines) >= 2)
    finally:
        code = follow.interrupt()
    assert code == 0
    assert [x.split()[2] for x in follow.lines] == ["task.started", "task.failed"]


def test_status_lists_live_role_processes(system: System) -> None:
    system.bus.publish_many(scenario())
    beat = PresenceBeat(system.bus.client, system.prefix, "gate", "gate-host:9", 30.0)
    beat.beat()
    try:
        out = system.loops("status", check=True).stdout
        data = json.loads(system.loops("status", "--json", check=True).stdout)
    finally:
        beat.stop()
    assert out.startswith("roles alive: gate@gate-host:9 (")
    assert [(r["role"], r["instance"]) for r in data["roles"]] == [("gate", "gate-host:9")]


def test_status_finds_the_embedded_server_of_dir(system: System) -> None:
    project = system.cwd / "project"
    project.mkdir()
    env = {**system.env, "LOOPS_PREFIX": "loops"}
    with EmbeddedServer(project) as server:
        with RedisBus.from_settings(server.settings(prefix="loops")) as embedded:
            embedded.publish_many(scenario())
        proc = subprocess.run(
            [LOOPS, "status", "--json", "--dir", str(project)],
            capture_output=True,
            text=True,
            env=env,
            cwd=system.cwd,
            timeout=30,
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["loops"]["loop-api"]["tasks"]["API-1"]["status"] == "merged"
    # The server is gone, but it left its data: the log stays readable (and a question
    # answerable) between two runs; the server is woken for the command and stopped.
    after = subprocess.run(
        [LOOPS, "events", "--dir", str(project)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert after.returncode == 0, after.stderr
    assert "API-1" in after.stdout
    assert recorded_url(project) is None  # stopped again
    never = system.cwd / "never-ran"
    never.mkdir()
    gone = subprocess.run(
        [LOOPS, "events", "--dir", str(never)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"loops: no coding-loops system is running in {never}")
    assert gone.stderr.count("\n") == 1


def test_operator_readers_read_past_hostile_entries(system: System) -> None:
    """Issue 9, row 6: an entry whose `type` is one non-UTF-8 byte (and others no event
    can be made of) stops neither `loops events` nor `loops status`."""
    history = scenario()
    system.bus.publish_many(history[:3])
    for fields in (
        {b"type": b"\xff", b"id": b"x", b"data": b"{}"},
        {b"\xfe": b"\xff"},
        {b"type": b"task.started", b"data": b'{"type": "task.started", "attempt": NaN}'},
    ):
        system.bus.client.xadd(system.bus.stream, fields)  # type: ignore[arg-type]
    system.bus.publish_many(history[3:])
    for args in (("events",), ("events", "--type", "task.*"), ("events", "--json")):
        proc = system.loops(*args, check=True)
        assert "Traceback" not in proc.stderr
    assert len(system.loops("events", check=True).stdout.splitlines()) == len(history)
    out = system.loops("status", check=True).stdout
    assert "loop-api" in out and "Traceback" not in out
    follow = Lines(system.popen("events", "--follow"))
    try:
        wait_until(lambda: follow.proc.poll() is None)
        system.bus.client.xadd(system.bus.stream, {b"type": b"\xff", b"data": b"\xff"})  # type: ignore[dict-item]
        system.bus.publish(ev.TaskStarted(source=W, loop="loop-api", task_id="API-9", attempt=1))
        wait_until(lambda: any("API-9" in x for x in follow.lines))
    finally:
        assert follow.interrupt() == 0
