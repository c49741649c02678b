"""The Pub/Sub and Firestore emulators as the tests see them: the pair the session shares, and the check
that they can be started here at all."""

from __future__ import annotations

from devtools import emulators as emulator_tools
from devtools.emulators import Emulator
from tests.support import missing

PROJECT = "test-project"


class EmulatorPair:
    def __init__(self, pubsub: Emulator, firestore: Emulator) -> None:
        self.pubsub = pubsub
        self.firestore = firestore
        self.project = PROJECT

    def env(self) -> dict[str, str]:
        return {**self.pubsub.env(), **self.firestore.env(), "GOOGLE_CLOUD_PROJECT": PROJECT}


def require_emulators() -> None:
    """Skip when an emulator is not installed; fail instead under CI, where a skip would hide the tests."""
    kinds: tuple[emulator_tools.Kind, ...] = ("pubsub", "firestore")
    for kind in kinds:
        if emulator_tools.available(kind):
            continue
        missing(f"{kind} emulator unavailable: install gcloud's emulator or set {emulator_tools.ENV_JAR[kind]}")
