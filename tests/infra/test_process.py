"""Whether a process runs: a zombie counts as gone (the embedded server's owner check
and the monitor's liveness both depend on it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from agents.monitor import local_pid_alive
from infra.process import pid_alive
from tests.conftest import wait_until


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert not pid_alive(child.pid)


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_until(lambda: not pid_alive(child.pid), timeout=10)  # exited, not reaped
        assert child.poll() is not None  # and it was a zombie until now
    finally:
        child.wait(10)


def test_the_monitor_judges_only_this_hosts_processes() -> None:
    assert local_pid_alive(socket.gethostname(), os.getpid()) is True
    assert local_pid_alive("another-host", os.getpid()) is None
