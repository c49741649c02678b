"""A bench ended by SIGTERM (``timeout``, ``kill``) stops the servers it started.

Regression: Python's default for SIGTERM ended the bench at once, and the
emulators and stream processes it had started (each in a session of its own)
ran on beside every later run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench.servers import ROOT

_BENCH = """
import sys, time
from bench.run import _stream_env
from bench.servers import start_stream_service, stop_on_sigterm
if sys.argv[1] == "handled":
    stop_on_sigterm()
server = start_stream_service(_stream_env(max_per_user=3))
try:
    print(server.process.pid, flush=True)
    time.sleep(120)
finally:
    server.stop()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["handled", "default"])
def test_the_server_a_bench_started_ends_with_it(mode: str) -> None:
    bench = subprocess.Popen([sys.executable, "-c", _BENCH, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server = 0
    try:
        assert bench.stdout is not None
        server = int(bench.stdout.readline())
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=30)
        if mode == "handled":
            assert bench.returncode == 128 + signal.SIGTERM
            assert _wait(lambda: not _alive(server)), "the stream service outlived the bench"
        else:
            # What every bench did before stop_on_sigterm: the server runs on.
            assert bench.returncode == -signal.SIGTERM
            assert _alive(server)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if bench.stdout is not None:
            bench.stdout.close()
        if server and _alive(server):
            os.killpg(server, signal.SIGKILL)
