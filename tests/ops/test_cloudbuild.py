"""cloudbuild.yaml parses, tests like CI does, then deploys, and names only things that exist."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support import ROOT


def load() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    assert isinstance(loaded, dict), "cloudbuild.yaml is a mapping"
    return loaded


def test_it_parses_and_runs_the_ci_tests_before_deploying() -> None:
    build = load()
    steps = {step["id"]: step for step in build["steps"]}
    assert list(steps) == ["test", "deploy"]
    test_script = " ".join(steps["test"]["args"])
    assert "bash .ci/run" in test_script
    assert "CI=true" in steps["test"]["env"]
    assert steps["deploy"]["args"][0] == "deploy.sh"
    assert "--project=$PROJECT_ID" in steps["deploy"]["args"]
    assert "--region=${_REGION}" in steps["deploy"]["args"]
    assert steps["deploy"]["waitFor"] == ["test"]
    assert "_REGION" in build["substitutions"]
    for step in build["steps"]:
        assert step["name"].startswith("gcr.io/google.com/cloudsdktool/google-cloud-cli"), "an image with the emulators"


def test_every_file_and_target_it_names_exists() -> None:
    text = (ROOT / "cloudbuild.yaml").read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:\.ci/|ops/|devtools/)?[\w.-]+\.(?:sh|py)|\.ci/run)\b", text))
    assert {"deploy.sh", ".ci/run"} <= named
    for path in named:
        assert (ROOT / path).is_file(), f"cloudbuild.yaml names {path}, which is not in the repository"
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci_run
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(), re.M)
    # Substitutions used are defined (or built in).
    used = set(re.findall(r"\$\{?(_[A-Z_]+)", text))
    assert used <= set(load()["substitutions"])
