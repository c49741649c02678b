"""Every command shape deploy.sh runs is accepted by the real gcloud's argument parser.

The stand-in gcloud records what deploy.sh runs; here each distinct shape
(command path and set of flags) is handed to the installed Google Cloud SDK
with no credentials, inside a network namespace of its own (nothing can leave
the machine). gcloud parses the arguments first and then stops at "no active
account": reaching that point proves the command and every flag exist.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import missing
from tests.support.fake_cloud import PROJECT, FakeCloud

# Three deploy.sh runs and one real gcloud start (about 2 s here) per command shape.
pytestmark = [pytest.mark.timeout(900)]


def isolated(gcloud: str, config: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(config),
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }
    return subprocess.run(
        ["unshare", "--net", gcloud, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_every_command_shape_parses_with_the_real_gcloud(cloud: FakeCloud, gcloud_sdk: str, tmp_path: Path) -> None:
    gcloud = gcloud_sdk
    if shutil.which("unshare") is None:
        missing("needs unshare (util-linux)")
    config = tmp_path / "gcloud-config"
    config.mkdir()
    probe = isolated(gcloud, config, ["pubsub", "topics", "describe", "t", "--project=p"])
    if "active account" not in probe.stderr:
        missing(f"cannot run gcloud in an empty network namespace here: {probe.stderr[-300:]}")

    shapes: dict[tuple[object, ...], list[str]] = {}
    runs = [
        (mode, ("--project", PROJECT, "--jwt-secret-file", str(cloud.indexes))) for mode in ("missing", "present")
    ] + [("present", ("--project", PROJECT, "rollback"))]
    for mode, args in runs:
        run = cloud.run(*args, mode=mode)
        assert run.result.returncode == 0, run.result.stderr[-2000:]
        for call in run.calls:
            if call.tool != "gcloud" or call.argv[:2] == ["auth", "print-access-token"]:
                continue
            words = tuple(a for a in call.argv if not a.startswith("-"))[:3]
            flags = frozenset(a.split("=", 1)[0] for a in call.argv if a.startswith("-"))
            shapes.setdefault((words, flags), call.argv)
    assert len(shapes) >= 25

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda argv: (argv, isolated(gcloud, config, argv)), shapes.values()))
    refused = [
        f"gcloud {' '.join(argv)}\n  {result.stderr.strip()[:300]}"
        for argv, result in results
        if "active account" not in result.stderr
    ]
    assert refused == [], "\n".join(refused)
