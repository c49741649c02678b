"""npm for the browser-package tests: the machine's Node and npm, packages from the lockfiles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "clients" / "web"
SERVED_CLIENT = ROOT / "functions" / "stream" / "web" / "client.js"


def require_npm() -> str:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        message = "node/npm missing: apt-get install nodejs npm (devtools/system-packages.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return npm


def npm(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run npm; its output on failure, so a broken build says why."""
    result = subprocess.run(
        [require_npm(), *args, "--no-audit", "--no-fund"] if args[0] in {"ci", "install"} else [require_npm(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise AssertionError(f"npm {' '.join(args)} failed in {cwd.name}:\n{output}")
    return result.stdout


def ensure_installed(folder: Path) -> None:
    """``npm ci`` unless node_modules already matches the lockfile (make test runs it first)."""
    installed = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm(["ci"], folder)


def pack(destination: Path) -> dict[str, Any]:
    """``npm pack`` of clients/web into ``destination``: npm's JSON report (name, size, files, ...)."""
    ensure_installed(PACKAGE)
    report = json.loads(npm(["pack", "--json", "--pack-destination", str(destination)], PACKAGE))
    entry: dict[str, Any] = report[0]
    return entry
