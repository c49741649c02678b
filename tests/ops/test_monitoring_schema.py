"""The log-based metrics, alert policies and dashboards use only fields the Logging and Monitoring APIs know.

Checked offline with the API message classes of the installed Google Cloud SDK
(a typo such as ``comparision`` would otherwise surface only at deploy time).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, missing


@pytest.fixture
def sdk(gcloud_sdk: str) -> tuple[Path, Path]:
    """The Google Cloud SDK's root and its bundled Python (skipped here without them; a failure under CI)."""
    root = Path(os.path.realpath(gcloud_sdk)).parent.parent
    python = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    if not (root / "lib" / "googlecloudsdk").is_dir() or not python.exists():
        missing(f"{root} is not a Google Cloud SDK with its bundled Python")
    return root, python


def test_metrics_and_alerts_match_the_api_schemas(sdk: tuple[Path, Path]) -> None:
    root, python = sdk
    files = sorted(str(p) for p in [*(ROOT / "ops").glob("*/*.yaml"), *(ROOT / "ops" / "dashboards").glob("*.json")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(python), str(Path(__file__).with_name("gcloud_schema_check.py")), str(root), *files],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) >= 30
    assert any(line.endswith(".json OK") for line in lines), "the dashboard is checked too"
    assert [line for line in lines if not line.endswith(" OK")] == []


@pytest.mark.parametrize(
    ("name", "source", "typo", "reported"),
    [
        ("alerts/bad.yaml", "alerts/dead_letters.yaml", ("comparison:", "comparision:"), "comparision"),
        ("alerts/bad.yaml", "alerts/slo_delivery_fast.yaml", ("CRITICAL", "CRITICL"), "/severity"),
        ("dashboards/bad.json", "dashboards/notifications.json", ('"plotType"', '"plotTyp"'), "plotTyp"),
    ],
)
def test_the_checker_catches_a_misspelled_field(
    sdk: tuple[Path, Path], tmp_path: Path, name: str, source: str, typo: tuple[str, str], reported: str
) -> None:
    root, python = sdk
    bad = tmp_path / name
    bad.parent.mkdir()
    bad.write_text((ROOT / "ops" / source).read_text().replace(*typo, 1))
    result = subprocess.run(
        [str(python), str(Path(__file__).with_name("gcloud_schema_check.py")), str(root), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "BAD" in result.stdout and reported in result.stdout
