"""The kill switch's document on Firestore: ``config/notifications``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.cloud import firestore

from shared.backends.google_errors import unavailable_on_error
from shared.killswitch import CONFIG_COLLECTION, CONFIG_DOCUMENT, SwitchDocument

# A read sits in front of an ingest delivery or a stream connect: short, and not retried
# (a failed read keeps the last value; the next period reads again).
READ_TIMEOUT_SECONDS = 2.0


class FirestoreSwitchDocument(SwitchDocument):
    def __init__(self, client: Callable[[], firestore.Client], *, timeout: float = 10.0) -> None:
        # The client is built lazily by the store; take it only when first used.
        self._client = client
        self._timeout = timeout

    def _ref(self) -> Any:
        return self._client().collection(CONFIG_COLLECTION).document(CONFIG_DOCUMENT)

    def read(self) -> Mapping[str, Any] | None:
        with unavailable_on_error("kill switch read", "Firestore"):
            snapshot = self._ref().get(retry=None, timeout=min(self._timeout, READ_TIMEOUT_SECONDS))
        return snapshot.to_dict() if snapshot.exists else None

    def write(self, fields: Mapping[str, Any]) -> None:
        with unavailable_on_error("kill switch write", "Firestore"):
            self._ref().set(dict(fields), merge=True, timeout=self._timeout)
