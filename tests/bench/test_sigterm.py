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

import pytest

from bench.servers import ROOT
from tests.support.processes import alive
from tests.support.waiting import wait_for

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
            wait_for(lambda: not alive(server), timeout=15, what="the stream service to end with the bench")
        else:
            # What every bench did before stop_on_sigterm: the server runs on.
            assert bench.returncode == -signal.SIGTERM
            assert alive(server)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if bench.stdout is not None:
            bench.stdout.close()
        if server and alive(server):
            os.killpg(server, signal.SIGKILL)
