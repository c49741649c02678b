"""Redeemed stream tickets on Cloud Firestore: ``stream_tickets/{ticket_id}`` with ``expire_at``.

Redeeming is one ``create()``: Firestore refuses it when the document exists,
atomically, whichever instance asks, so a ticket opens at most one stream. One
write per stream opened with a ticket, no read; a TTL policy on ``expire_at``
deletes the documents once their tickets have expired anyway (the field is
exempt from indexing: nothing queries it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error

from shared.backends.google_errors import unavailable_on_error
from shared.redeemed_tickets import RedeemedTickets

COLLECTION = "stream_tickets"


class FirestoreRedeemedTickets(RedeemedTickets):
    def __init__(self, client: Any, *, timeout: float = 10.0) -> None:
        self._client = client
        self._timeout = timeout
        # AlreadyExists is not transient: a create that lost the race is never retried.
        self._retry = Retry(predicate=if_transient_error, initial=0.1, maximum=1.0, timeout=timeout)

    def redeem(self, ticket_id: str, expires_at: float) -> bool:
        document = self._client.collection(COLLECTION).document(ticket_id)
        with unavailable_on_error("stream ticket redemption", "Firestore"):
            try:
                document.create(
                    {"expire_at": datetime.fromtimestamp(expires_at, UTC)}, retry=self._retry, timeout=self._timeout
                )
            except gexc.AlreadyExists:
                # Also what a retried create meets when its lost first attempt did commit: the
                # ticket is then refused, and the client asks for another. Rare, and never unsafe.
                return False
        return True
