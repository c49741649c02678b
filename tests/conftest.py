"""Session fixtures: the real Pub/Sub and Firestore emulators, started by the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import emulators as emulator_tools
from devtools.emulators import Emulator
from shared.config import reset_settings

pytest_plugins = ["tests.support.gcp_fixtures"]

PROJECT = "test-project"
# The tests are a development run: the only mode allowed the public development JWT
# secret (tests that check its refusal pass their own environment).
os.environ.setdefault("NOTIFICATIONS_LOCAL_MODE", "true")
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/emulator/" in str(item.path) or "emulators" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.emulator)


def _require(kind: emulator_tools.Kind) -> None:
    if emulator_tools.available(kind):
        return
    message = f"{kind} emulator unavailable: install gcloud's emulator or set {emulator_tools.ENV_JAR[kind]}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class EmulatorPair:
    def __init__(self, pubsub: Emulator, firestore: Emulator) -> None:
        self.pubsub = pubsub
        self.firestore = firestore
        self.project = PROJECT

    def env(self) -> dict[str, str]:
        return {**self.pubsub.env(), **self.firestore.env(), "GOOGLE_CLOUD_PROJECT": PROJECT}


@pytest.fixture(scope="session")
def emulators_session() -> Iterator[EmulatorPair]:
    _require("pubsub")
    _require("firestore")
    pubsub = emulator_tools.start("pubsub", PROJECT)
    try:
        firestore = emulator_tools.start("firestore", PROJECT)
    except BaseException:
        pubsub.stop()
        raise
    pair = EmulatorPair(pubsub, firestore)
    saved = {k: os.environ.get(k) for k in pair.env()}
    os.environ.update(pair.env())
    reset_settings()
    try:
        yield pair
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()
        firestore.stop()
        pubsub.stop()


@pytest.fixture
def emulators(emulators_session: EmulatorPair) -> EmulatorPair:
    """Both emulators running, with their hosts in the environment."""
    return emulators_session
