"""The production start command refuses to run with the public development secret.

Outside Cloud Run (GKE, a VM, plain Docker) the service once started with the
public development JWT secret when JWT_SECRET was unset, and said nothing.
Only NOTIFICATIONS_LOCAL_MODE=true may use it; anything else exits at start
with a message naming the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devtools.emulators import free_port
from tests.support import ROOT

# The variables that decide, removed from the test run's own environment (which is local mode).
_DECIDING = ("JWT_SECRET", "JWT_PUBLIC_KEY", "NOTIFICATIONS_LOCAL_MODE", "K_SERVICE", "JWT_SECRET_REQUIRED")


@pytest.mark.parametrize(
    "env",
    [{}, {"K_SERVICE": "notifications-stream", "JWT_SECRET_REQUIRED": "false"}, {"JWT_SECRET": "  "}],
    ids=["vm-or-docker", "cloud-run-with-the-old-switch", "whitespace-secret"],
)
def test_the_start_command_exits_naming_the_variable(env: dict[str, str]) -> None:
    base = {k: v for k, v in os.environ.items() if k not in _DECIDING}
    full = {**base, "NOTIFICATIONS_BACKEND": "memory", "PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, "-m", "functions.stream.serve", "--host", "127.0.0.1", "--port", str(free_port())]
    result = subprocess.run(command, env=full, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr and "NOTIFICATIONS_LOCAL_MODE" in result.stderr
