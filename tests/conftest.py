"""Shared fixtures. Tests wait on state (`wait_until`), never on the clock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

# Timing is not a property we test here; cold imports must not fail a fuzz run.
settings.register_profile(
    "loops", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("loops")

IN_CI = os.environ.get("CI", "").lower() == "true"


def wait_until(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `cond` until it returns a truthy value; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {cond}")
        time.sleep(interval)
