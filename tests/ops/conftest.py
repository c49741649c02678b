"""Fixtures of the deploy tests: a stand-in Google Cloud in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_cloud import DeployRun, FakeCloud


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)


@pytest.fixture(scope="package")
def first_deploy(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeCloud, DeployRun]:
    """One whole first deploy without a secret file, which the tests that use it only read (a run takes 3 s)."""
    cloud = FakeCloud(tmp_path_factory.mktemp("cloud"))
    return cloud, cloud.first_run()
