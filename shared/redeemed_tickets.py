"""The record of stream tickets already used, so a ticket opens one stream only, on any instance.

A stream ticket (``functions/stream/tickets.py``) is signed and short-lived, so
any instance can check it without a lookup; what a signature cannot prove is
that the ticket was not used before. That needs one shared record, kept here
behind an interface: Firestore in production, a dictionary in one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class RedeemedTickets(ABC):
    """Remembers ticket ids until they expire. Blocking: run it in a thread."""

    @abstractmethod
    def redeem(self, ticket_id: str, expires_at: float) -> bool:
        """True the first time ``ticket_id`` is redeemed, False ever after (until ``expires_at``).

        Raises BackendUnavailable when the record cannot be reached.
        """
