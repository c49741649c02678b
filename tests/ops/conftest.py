"""Fixtures of the deploy tests: a stand-in Google Cloud in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_cloud import FakeCloud


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)
