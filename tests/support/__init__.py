"""Helpers the tests share: processes, waiting on conditions, events, the emulators, the stream service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]


def missing(message: str) -> NoReturn:
    """A tool a test needs is not installed: skip here, fail under CI, where a skip would hide the check."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
