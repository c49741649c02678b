"""Servers the bench starts (our stream service, a stand-in, nginx+nchan) and what /proc says about them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import raise_open_files_limit
from devtools.emulators import free_port

ROOT = Path(__file__).resolve().parents[1]
HOOK_DIR = ROOT / "bench" / "hook"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
_TICK = os.sysconf("SC_CLK_TCK")


def stop_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``) end a bench as Ctrl-C does: through its clean-ups.

    Python's default for SIGTERM ends the process at once. The emulators, stream
    processes and nginx a bench had started, each in a session of its own, then
    ran on, idle, beside every later run (found on 2026-12-01, after a morning of runs).
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early ({process.returncode}):\n{tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout:.0f} s:\n{tail(log)}")


def group_cpu_seconds(group: int) -> float:
    """CPU of every process in a process group (functions-framework's gunicorn workers, an emulator's JVM)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workdir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The process and its descendants (nginx: master and workers)."""
        found = [self.process.pid]
        frontier = [self.process.pid]
        while frontier:
            pid = frontier.pop()
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    children = [int(c) for c in task.read_text().split()]
                except (OSError, ValueError):
                    continue
                found.extend(children)
                frontier.extend(children)
        return found

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its descendants, from /proc/<pid>/stat."""
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
        return total / _TICK

    def log_messages(self, severities: tuple[str, ...] = ("WARNING", "ERROR", "CRITICAL")) -> dict[str, int]:
        """How often each message of those severities is in the server's JSON log so far."""
        counts: dict[str, int] = {}
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return counts
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("severity") in severities:
                key = f"{entry['severity']}: {entry.get('message')}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.log.unlink(missing_ok=True)


def _spawn(name: str, command: list[str], env: dict[str, str], port: int, timeout: float = 60.0) -> Server:
    # Raised here, and the server inherits it. Not in Popen's preexec_fn, which runs Python in a fork() of
    # a bench that holds gRPC clients: one nginx start died before exec that way (SIGABRT, gRPC's
    # "epoll_wait error: Bad file descriptor" in its log).
    raise_open_files_limit()
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name, process, port, Path(log_name))
    try:
        wait_port(port, process, timeout, server.log)
    except BaseException:
        server.stop()
        raise
    return server


def python_env(extra: dict[str, str], hook: bool = False) -> dict[str, str]:
    """The environment of a Python child; ``hook`` puts the counting sitecustomize first on its path."""
    env = {**os.environ, **extra}
    path = [str(ROOT)]
    if hook:
        path.insert(0, str(HOOK_DIR))
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def start_stream_service(env: dict[str, str], *, hook: bool = False) -> Server:
    """Our stream service with its own start command, serving the bench's injection route in front."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions.stream.serve",
        "--app",
        "bench.inject_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return _spawn("stream", command, python_env(env, hook), port)


def nchan_available() -> str | None:
    """None when nginx and the nchan module are here; else why not."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed"
    if not NCHAN_MODULE.is_file():
        return f"the nchan module is not installed ({NCHAN_MODULE} missing)"
    return None


def install_nchan() -> str | None:
    """Install nginx and libnginx-mod-nchan from Debian when missing and root; None on success, else why not."""
    if nchan_available() is None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{nchan_available()} and this is not a root Debian machine to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx", "libnginx-mod-nchan"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return f"apt-get install nginx libnginx-mod-nchan failed: {done.stderr.strip()[-500:]}"
    return nchan_available()


def start_nchan(heartbeat: int) -> Server:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir()
    template = (ROOT / "bench" / "nchan" / "nginx.conf").read_text()
    config = (
        template.replace("{module}", str(NCHAN_MODULE))
        .replace("{tmp}", str(workdir))
        .replace("{port}", str(port))
        .replace("{heartbeat}", str(heartbeat))
    )
    conf = workdir / "nginx.conf"
    conf.write_text(config)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    server = _spawn("nchan", command, dict(os.environ), port, timeout=20)
    server.workdir = workdir
    return server
