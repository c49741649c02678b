"""deploy.sh against a stand-in gcloud (tests/support/fake_gcloud.py) on PATH, in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT

FAKE = Path(__file__).with_name("fake_gcloud.py")
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


class FakeCloud:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        source = FAKE.read_text()
        for tool in ("gcloud", "curl"):
            path = self.bin / tool
            path.write_text(f"#!{sys.executable}\n{source}")
            path.chmod(0o755)
        self.log = tmp / "calls.jsonl"
        self.build = tmp / "build"
        # The repository's own file, which deploy.sh reads by default: deleting it must fail the deploy tests.
        self.indexes = ROOT / "firestore.indexes.json"

    def run(self, *args: str, mode: str = "missing", extra_env: dict[str, str] | None = None) -> DeployRun:
        self.log.write_text("")
        env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_MODE": mode,
            "FAKE_GCLOUD_APIS": ",".join(deploy_apis()),
            "FAKE_GCLOUD_INDEXES": str(self.indexes),
            **(extra_env or {}),
        }
        for name in ("GOOGLE_CLOUD_PROJECT", "CONTENT_EVENTS_TOPIC", "NOTIFICATIONS_TOPIC"):
            env.pop(name, None)
        command = ["bash", str(ROOT / "deploy.sh"), "--build-dir", str(self.build), *args]
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
        )
        calls = [Call(**json.loads(line)) for line in self.log.read_text().splitlines() if line.strip()]
        return DeployRun(result, calls)



def flag(call: Call, name: str) -> Any:
    """The value of --name=value in a call, or None."""
    for arg in call.argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None
