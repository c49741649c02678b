"""Start the Pub/Sub and Firestore emulators and wait until they answer.

They come from ``gcloud`` where its emulator components are installed, else
from the jars named by PUBSUB_EMULATOR_JAR / FIRESTORE_EMULATOR_JAR, run with
plain ``java``. Each runs in its own process group so stopping it stops the JVM
that ``gcloud`` spawns, too.

The Firestore emulator's JVM compiles with C1 only (``-XX:TieredStopAtLevel=1``)
unless EMULATOR_JAVA_OPTIONS says otherwise for both (empty: the JVM's
defaults). The emulators stand in for managed services whose CPU is not on the
machine under test; with the default tiered compiler the Firestore emulator's
C2 compiler threads used more CPU than its request threads for the first tens
of thousands of requests, on machines of two cores shared with the services
being measured (docs/benchmarks.md, "Emulator JIT"). The Pub/Sub emulator keeps
the JVM's defaults: with C1 the stream processes spent about 2% more CPU per
delivery (its batches differ), and its compiler was not seen in the way.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

logger = logging.getLogger(__name__)

Kind = Literal["pubsub", "firestore"]
ENV_HOST = {"pubsub": "PUBSUB_EMULATOR_HOST", "firestore": "FIRESTORE_EMULATOR_HOST"}
ENV_JAR = {"pubsub": "PUBSUB_EMULATOR_JAR", "firestore": "FIRESTORE_EMULATOR_JAR"}
_GCLOUD_COMPONENT = {"pubsub": "pubsub-emulator", "firestore": "cloud-firestore-emulator"}
JAVA_OPTIONS_ENV = "EMULATOR_JAVA_OPTIONS"
DEFAULT_JAVA_OPTIONS: dict[str, str] = {"firestore": "-XX:TieredStopAtLevel=1", "pubsub": ""}


class EmulatorUnavailable(RuntimeError):
    """Neither gcloud's emulator nor a jar is available, or it did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gcloud_sdk_root() -> Path | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    # /usr/lib/google-cloud-sdk/bin/gcloud, possibly behind a symlink in /usr/bin.
    root = Path(os.path.realpath(gcloud)).parent.parent
    return root if (root / "platform").is_dir() else None


def _command(kind: Kind, host: str, port: int, project: str) -> list[str]:
    jar = os.environ.get(ENV_JAR[kind], "").strip()
    root = _gcloud_sdk_root()
    if root is not None and (root / "platform" / _GCLOUD_COMPONENT[kind]).is_dir():
        if kind == "pubsub":
            return [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={host}:{port}",
                f"--project={project}",
            ]
        return ["gcloud", "emulators", "firestore", "start", f"--host-port={host}:{port}"]
    if jar:
        if not Path(jar).is_file():
            raise EmulatorUnavailable(f"{ENV_JAR[kind]} names {jar!r}, which is not a file")
        java = shutil.which("java")
        if java is None:
            raise EmulatorUnavailable(f"{ENV_JAR[kind]} is set but java is not installed")
        if kind == "pubsub":
            return [java, "-jar", jar, f"--host={host}", f"--port={port}"]
        return [
            java,
            "-Duser.language=en",
            "-cp",
            jar,
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start",
            f"--host={host}",
            f"--port={port}",
        ]
    raise EmulatorUnavailable(
        f"no {kind} emulator: install gcloud's {_GCLOUD_COMPONENT[kind]} component or set {ENV_JAR[kind]}"
    )


def java_options(kind: Kind, environ: Mapping[str, str] | None = None) -> str:
    """The JVM options of ``kind``'s emulator: EMULATOR_JAVA_OPTIONS when set (even empty), else its default."""
    value = (os.environ if environ is None else environ).get(JAVA_OPTIONS_ENV)
    return DEFAULT_JAVA_OPTIONS[kind] if value is None else value.strip()


def _process_env(kind: Kind, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The emulator's environment: ours, with its JVM options added to JAVA_TOOL_OPTIONS.

    JAVA_TOOL_OPTIONS reaches the JVM whether gcloud or we start it; options
    already there come after ours, so they win.
    """
    env = dict(os.environ if environ is None else environ)
    options = java_options(kind, env)
    if options:
        env["JAVA_TOOL_OPTIONS"] = " ".join(filter(None, [options, env.get("JAVA_TOOL_OPTIONS", "").strip()]))
    return env


def available(kind: Kind) -> bool:
    try:
        _command(kind, "127.0.0.1", 1, "p")
    except EmulatorUnavailable:
        return False
    return True


@dataclass
class Emulator:
    kind: Kind
    host: str
    port: int
    project: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> Emulator:
        command = _command(self.kind, self.host, self.port, self.project)
        fd, name = tempfile.mkstemp(prefix=f"{self.kind}-emulator-", suffix=".log")
        self.log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_process_env(self.kind),
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmulatorUnavailable(f"{self.kind} emulator exited early:\n{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise EmulatorUnavailable(f"{self.kind} emulator not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        # gcloud may have exited while its JVM child lives on in the group.
        if process is not None:
            _kill_group(process, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self) -> None:
        """Firestore only: delete every document of the project."""
        if self.kind != "firestore":
            raise ValueError("only the Firestore emulator can be reset")
        url = f"http://{self.address}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).close()

    def env(self) -> dict[str, str]:
        return {ENV_HOST[self.kind]: self.address}


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start(kind: Kind, project: str, port: int | None = None, host: str = "127.0.0.1") -> Emulator:
    return Emulator(kind, host, port or free_port(), project).start()
