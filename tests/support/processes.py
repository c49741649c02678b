"""The one way tests run a child process: its own process group, output in a log file, a clean stop.

Every server a test starts (functions-framework, the stream service, ``make run``,
a staged deploy folder) goes through ``spawn``/``start_server`` so that stopping it
reaches the whole group (uvicorn workers, functions-framework's reloader) and a
failing test can show what the process printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from devtools.emulators import free_port
from tests.support import ROOT
from tests.support.waiting import port_open, wait_for

T = TypeVar("T")


@dataclass
class ManagedProcess:
    process: subprocess.Popen[bytes]
    command: list[str]
    log_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        assert self.port, f"{self.name} listens on no known port"
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return " ".join(self.command[:4])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_until(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Poll ``condition``; fail at once, with the log's tail, if the process exits first."""

        def check() -> T:
            if not self.running():
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            return condition()

        return wait_for(check, timeout, what=f"{what} ({self.name})")

    def send(self, sig: signal.Signals, *, group: bool = True) -> None:
        """``group``: the whole process group, as a terminal's Ctrl-C does; else the process alone."""
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                self.process.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` to the group, then SIGKILL if it is still there after ``timeout``; the exit code."""
        if self.running():
            self.send(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.process.wait(timeout=timeout)
        return int(self.process.returncode)

    def descendants(self) -> set[int]:
        """Every live process below this one, including those that started sessions of their own."""
        return descendants(self.pid)

    def kill_tree(self, known: Iterable[int] = ()) -> None:
        """SIGKILL this group and the group of every descendant (``known`` adds ones seen earlier)."""
        for pid in {*known, *self.descendants()}:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.send(signal.SIGKILL)
        self.process.wait(timeout=10)


def spawn(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> ManagedProcess:
    """Start ``command`` in a new session (its own process group), stdout and stderr to a log file."""
    fd, name = tempfile.mkstemp(prefix="process-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ManagedProcess(process, command, Path(name))


def start_server(
    command: list[str], env: dict[str, str], port: int, cwd: Path = ROOT, ready_timeout: float = 30.0
) -> ManagedProcess:
    """``spawn``, then wait until ``port`` accepts connections."""
    server = spawn(command, env, cwd)
    server.port = port
    try:
        server.wait_until(lambda: port_open("127.0.0.1", port), ready_timeout, what=f"port {port} to listen")
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def start_function(
    source: str, target: str, env: dict[str, str], port: int | None = None, signature: str | None = None
) -> ManagedProcess:
    """A function of this repository under functions-framework, as Cloud Functions runs it."""
    port = port or free_port()
    command = [sys.executable, "-m", "functions_framework", "--source", str(ROOT / source), "--target", target]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    if signature:
        command += ["--signature-type", signature]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return start_server(command, full_env, port)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children[parent].append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children[todo.pop()]:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left
