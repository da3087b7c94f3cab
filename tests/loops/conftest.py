"""Fixtures of the loop tests."""

from __future__ import annotations

import pytest

from loops.sandbox import SandboxConfig, sandbox_status
from tests.conftest import IN_CI


@pytest.fixture
def bwrap() -> str:
    """The bwrap that sandboxes agents; skips without one (fails under CI=true)."""
    status = sandbox_status(SandboxConfig())
    if not status.active or status.bwrap is None:
        message = f"the sandbox cannot run here: {status.warning}"
        if IN_CI:
            pytest.fail(message + "; CI=true requires bubblewrap (apt-get install bubblewrap)")
        pytest.skip(message)
    return status.bwrap
