"""deploy.sh against a stand-in gcloud (answers in tests/support/fake_gcloud.py) on PATH, in a temporary directory.

The ``gcloud`` and ``curl`` on PATH are a few lines of bash that send their
arguments over loopback TCP to a server in the test process, which records them
and answers. A deploy makes close to 200 calls: a Python interpreter per call
made one deploy.sh run take 10 s, the bash client a fraction of that.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT
from tests.support.fake_gcloud import answer

# Fields are NUL-terminated: their count, the tool, the bytes it read on stdin, then its arguments.
CLIENT = r"""#!/usr/bin/env bash
tool="${0##*/}" bytes=0
for arg in "$@"; do
  if [ "$arg" = "--data-file=-" ] || { [ "$tool" = curl ] && [ "$arg" = "@-" ]; }; then
    bytes="$(( $(wc -c) ))"
    break
  fi
done
exec 3<>"/dev/tcp/127.0.0.1/${FAKE_GCLOUD_PORT:?}"
printf '%s\0' "$(( $# + 2 ))" "$tool" "$bytes" "$@" >&3
IFS= read -r code <&3
cat <&3
if [ "$code" != 0 ]; then echo "ERROR: (gcloud) NOT_FOUND: fake resource does not exist" >&2; fi
exit "$code"
"""
PROJECT = "notif-prod-test"
REGION = "europe-west1"
def deploy_apis() -> list[str]:
    """The APIs deploy.sh enables, read from the script itself."""
    text = (ROOT / "deploy.sh").read_text()
    block = re.search(r"^APIS=\((.*?)\)", text, re.S | re.M)
    assert block, "deploy.sh defines APIS=(...)"
    return block.group(1).split()


@dataclass
class Call:
    tool: str
    argv: list[str]
    stdin_bytes: int

    @property
    def line(self) -> str:
        return " ".join([self.tool, *self.argv])

    def has(self, *words: str) -> bool:
        return all(w in self.argv for w in words)


@dataclass
class DeployRun:
    result: subprocess.CompletedProcess[str]
    calls: list[Call]

    def find(self, *words: str) -> list[Call]:
        return [c for c in self.calls if c.has(*words)]

    def one(self, *words: str) -> Call:
        found = self.find(*words)
        assert len(found) == 1, f"expected one call with {words}, got {[c.line for c in found]}"
        return found[0]


class _Answers(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Call)
        self.env: Mapping[str, str] = {}
        self.calls: list[Call] = []
        self.lock = threading.Lock()


class _Call(socketserver.StreamRequestHandler):
    server: _Answers

    def handle(self) -> None:
        fields: list[bytes] = []
        wanted: int | None = None
        buffer = b""
        while wanted is None or len(fields) < wanted + 1:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            buffer += chunk
            *done, buffer = buffer.split(b"\0")
            fields += done
            if fields and wanted is None:
                wanted = int(fields[0])
        tool, stdin_bytes, *argv = (f.decode() for f in fields[1:])
        call = Call(tool, argv, int(stdin_bytes))
        with self.server.lock:
            self.server.calls.append(call)
        code, out = answer(self.server.env, tool, argv)
        self.request.sendall(f"{code}\n{out}{chr(10) if out else ''}".encode())
        self.request.shutdown(socket.SHUT_WR)


class FakeCloud:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in ("gcloud", "curl"):
            path = self.bin / tool
            path.write_text(CLIENT)
            path.chmod(0o755)
        # deploy.sh's python3: the installation the tests run on (without the virtualenv's packages), rather
        # than whatever is first on PATH; a version manager's shim there (pyenv) costs 0.15 s a call.
        python = Path(sys.base_prefix) / "bin" / "python3"
        if python.is_file():
            (self.bin / "python3").symlink_to(python)
        self.build = tmp / "build"
        # The repository's own file, which deploy.sh reads by default: deleting it must fail the deploy tests.
        self.indexes = ROOT / "firestore.indexes.json"

    def run(self, *args: str, mode: str = "missing", extra_env: dict[str, str] | None = None) -> DeployRun:
        with _Answers() as answers:
            serving = threading.Thread(target=answers.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            serving.start()
            env = {
                **os.environ,
                "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "FAKE_GCLOUD_PORT": str(answers.server_address[1]),
                "FAKE_GCLOUD_MODE": mode,
                "FAKE_GCLOUD_APIS": ",".join(deploy_apis()),
                "FAKE_GCLOUD_INDEXES": str(self.indexes),
                **(extra_env or {}),
            }
            for name in ("GOOGLE_CLOUD_PROJECT", "CONTENT_EVENTS_TOPIC", "NOTIFICATIONS_TOPIC"):
                env.pop(name, None)
            answers.env = env
            command = ["bash", str(ROOT / "deploy.sh"), "--build-dir", str(self.build), *args]
            try:
                result = subprocess.run(
                    command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
                )
            finally:
                answers.shutdown()
            with answers.lock:
                calls = list(answers.calls)
        return DeployRun(result, calls)

    def first_run(self, secret_file: Path | None = None) -> DeployRun:
        """A whole deploy into an empty project (``--jwt-secret-file`` when ``secret_file``), which must succeed."""
        args = ["--project", PROJECT, "--region", REGION]
        if secret_file is not None:
            args += ["--jwt-secret-file", str(secret_file)]
        run = self.run(*args, mode="missing")
        assert run.result.returncode == 0, run.result.stderr[-3000:]
        return run



def flag(call: Call, name: str) -> Any:
    """The value of --name=value in a call, or None."""
    for arg in call.argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None
