"""Real server processes for tests: functions-framework and the stream service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devtools.emulators import free_port
from tests.support.waiting import port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        return int(self.process.returncode)


def start_process(command: list[str], env: dict[str, str], port: int, ready_timeout: float = 30.0) -> ServerProcess:
    fd, name = tempfile.mkstemp(prefix="server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = ServerProcess(process, port, Path(name))

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{command[2:4]} exited early:\n{server.log()[-3000:]}")
        return port_open("127.0.0.1", port)

    wait_for(ready, ready_timeout, what=f"{' '.join(command[:4])} to listen")
    return server


def start_function(
    source: str, target: str, env: dict[str, str], port: int | None = None, signature: str | None = None
) -> ServerProcess:
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(ROOT / source),
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if signature:
        command += ["--signature-type", signature]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return start_process(command, full_env, port)
