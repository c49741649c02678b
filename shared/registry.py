"""The connection registry: which user has how many live streams, on which stream instances.

Its interface lives here because three deployables use it: the stream service
counts and records streams (SSE_MAX_CONNECTIONS_PER_USER across instances), and
the cleanup function prunes what dead instances left. The implementations are
in ``shared.backends`` (Firestore, in-memory), chosen in one place.

Every method is blocking (run it in a thread) and raises BackendUnavailable
when the store cannot be reached.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class ConnectionRegistry(ABC):
    """Counts each user's live streams across every instance of the service."""

    def __init__(self, instance_id: str, limit: int, heartbeat_interval: float) -> None:
        self.instance_id = instance_id
        self.limit = limit
        self.heartbeat_interval = heartbeat_interval

    @abstractmethod
    def start(self, subscription: str) -> None:
        """Announce this instance (and the subscription it owns)."""

    @abstractmethod
    def heartbeat(self) -> None:
        """Tell the other instances this one is alive; call once per heartbeat interval."""

    @abstractmethod
    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        """Record a new stream of ``user_id``; False when the user already has ``limit`` live streams.

        ``abandoned`` set means the caller gave up waiting (and answered 503):
        a later attempt of the transaction then stops instead of writing.
        """

    @abstractmethod
    def release(self, user_id: str, connection_id: str) -> None:
        """Forget a stream that ended (idempotent)."""

    @abstractmethod
    def stop(self) -> None:
        """Clean shutdown: this instance's streams stop counting at once."""
