"""Live connections per user across instances, for SSE_MAX_CONNECTIONS_PER_USER.

The Firestore layout is ``docs/firestore-layout.md`` ("Live connections"):

- ``stream_instances/{instance_id}``: ``heartbeat_at``, ``started_at``,
  ``subscription``, ``expire_at``; written at start and once per heartbeat
  interval by its instance, deleted at clean shutdown.
- ``connections/{user_id}``: ``live`` (connection_id -> {instance, opened_at}),
  ``instances`` (the instance ids present in ``live``), ``updated_at``; changed
  in a transaction on connect (count, then add) and on disconnect (remove).

An entry counts while its instance's heartbeat is newer than two heartbeat
intervals; entries of dead instances are dropped by the next connect of that
user, so a crashed instance stops counting without any cleanup.

Every method is blocking (run it in a thread) and raises BackendUnavailable
when the store cannot be reached.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import BackendUnavailable

logger = logging.getLogger(__name__)

INSTANCES = "stream_instances"
CONNECTIONS = "connections"
# A stream_instances document lingers this long after its last heartbeat if the
# instance dies; a Firestore TTL policy on expire_at removes it (cleanup too).
INSTANCE_EXPIRY = timedelta(days=1)


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


class MemoryRegistry(ConnectionRegistry):
    """One process only (NOTIFICATIONS_BACKEND=memory)."""

    def __init__(self, instance_id: str, limit: int, heartbeat_interval: float) -> None:
        super().__init__(instance_id, limit, heartbeat_interval)
        self._lock = threading.Lock()
        self._live: dict[str, set[str]] = {}

    def start(self, subscription: str) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        with self._lock:
            live = self._live.setdefault(user_id, set())
            if len(live) >= self.limit:
                return False
            live.add(connection_id)
            return True

    def release(self, user_id: str, connection_id: str) -> None:
        with self._lock:
            live = self._live.get(user_id)
            if live is not None:
                live.discard(connection_id)
                if not live:
                    del self._live[user_id]

    def stop(self) -> None:
        with self._lock:
            self._live.clear()

    def live_count(self, user_id: str) -> int:
        with self._lock:
            return len(self._live.get(user_id, ()))


class _Abandoned(Exception):
    """The caller stopped waiting for this connect."""


# Connects of one user contend on one document; a few more attempts than the
# client's default 5 ride out a burst (each attempt re-reads and re-counts).
TRANSACTION_ATTEMPTS = 10


@contextmanager
def _backend(what: str) -> Iterator[None]:
    from shared.backend_errors import unavailable_on_error

    with unavailable_on_error(what, "Firestore"):
        try:
            yield
        except ValueError as exc:
            # The client gives up on a contended transaction with a ValueError.
            if "transaction" not in str(exc).lower():
                raise
            raise BackendUnavailable(f"Firestore transaction contended during {what}: {exc}") from exc


def _fields(snapshot: Any) -> dict[str, Any]:
    data = snapshot.to_dict() if snapshot.exists else None
    return data if isinstance(data, dict) else {}


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class FirestoreRegistry(ConnectionRegistry):
    def __init__(
        self,
        client: Any,
        instance_id: str,
        limit: int,
        heartbeat_interval: float,
        *,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(instance_id, limit, heartbeat_interval)
        self._client = client
        self._timeout = timeout
        self._subscription = ""
        self._started_at: datetime | None = None
        # This instance's live connections. An entry of this instance that is not
        # here is a leftover (its release failed) and stops counting at once.
        self._local: set[str] = set()
        self._local_lock = threading.Lock()

    def _instance_ref(self, instance_id: str) -> Any:
        return self._client.collection(INSTANCES).document(instance_id)

    def _connections_ref(self, user_id: str) -> Any:
        return self._client.collection(CONNECTIONS).document(user_id)

    def start(self, subscription: str) -> None:
        self._subscription = subscription
        now = datetime.now(UTC)
        self._started_at = now
        with _backend("instance start"):
            self._instance_ref(self.instance_id).set(
                {
                    "heartbeat_at": now,
                    "started_at": now,
                    "subscription": subscription,
                    "expire_at": now + INSTANCE_EXPIRY,
                },
                timeout=self._timeout,
            )

    def heartbeat(self) -> None:
        now = datetime.now(UTC)
        with _backend("instance heartbeat"):
            # The whole record each time: if cleanup removed it (heartbeats failed
            # for longer than SSE_CONNECTION_TIMEOUT) it comes back complete.
            self._instance_ref(self.instance_id).set(
                {
                    "heartbeat_at": now,
                    "started_at": self._started_at or now,
                    "subscription": self._subscription,
                    "expire_at": now + INSTANCE_EXPIRY,
                },
                timeout=self._timeout,
            )

    def _alive(self, transaction: Any, instance_ids: list[str], now: datetime) -> set[str]:
        if not instance_ids:
            return set()
        cutoff = now - timedelta(seconds=2 * self.heartbeat_interval)
        refs = [self._instance_ref(i) for i in instance_ids]
        alive = set()
        for snapshot in self._client.get_all(refs, field_paths=["heartbeat_at"], transaction=transaction):
            beat = _aware(_fields(snapshot).get("heartbeat_at"))
            if beat is not None and beat > cutoff:
                alive.add(snapshot.id)
        return alive

    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        from google.cloud import firestore

        ref = self._connections_ref(user_id)

        @firestore.transactional  # type: ignore[untyped-decorator]
        def attempt(transaction: Any) -> bool:
            if abandoned is not None and abandoned.is_set():
                # Nobody waits for this connect any more: leave the document (and
                # its lock) to the connects that are still wanted.
                raise _Abandoned
            now = datetime.now(UTC)
            snapshot = ref.get(transaction=transaction)
            live: dict[str, Any] = dict(_fields(snapshot).get("live") or {})
            instances = sorted({str(e.get("instance")) for e in live.values() if isinstance(e, dict)})
            alive = self._alive(transaction, instances, now)
            with self._local_lock:
                local = set(self._local)
            kept = {
                c: e
                for c, e in live.items()
                if isinstance(e, dict)
                and e.get("instance") in alive
                and (e.get("instance") != self.instance_id or c in local)
            }
            if len(kept) >= self.limit:
                return False
            kept[connection_id] = {"instance": self.instance_id, "opened_at": now}
            transaction.set(
                ref,
                {
                    "live": kept,
                    "instances": sorted({str(e["instance"]) for e in kept.values()}),
                    "updated_at": now,
                },
            )
            return True

        # Known locally before the write, so a concurrent connect of the same user
        # on this instance never mistakes the new entry for a leftover.
        with self._local_lock:
            self._local.add(connection_id)
        accepted = False
        try:
            with _backend("connect"):
                accepted = bool(attempt(self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS)))
        except _Abandoned:
            accepted = False
        finally:
            if not accepted:
                with self._local_lock:
                    self._local.discard(connection_id)
        return accepted

    def release(self, user_id: str, connection_id: str) -> None:
        from google.cloud import firestore

        ref = self._connections_ref(user_id)

        @firestore.transactional  # type: ignore[untyped-decorator]
        def attempt(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            live: dict[str, Any] = dict(_fields(snapshot).get("live") or {})
            if live.pop(connection_id, None) is None:
                return
            if not live:
                transaction.delete(ref)
                return
            instances = sorted({str(e.get("instance")) for e in live.values() if isinstance(e, dict)})
            transaction.set(ref, {"live": live, "instances": instances, "updated_at": datetime.now(UTC)})

        with self._local_lock:
            self._local.discard(connection_id)
        with _backend("disconnect"):
            attempt(self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS))

    def stop(self) -> None:
        with _backend("instance stop"):
            self._instance_ref(self.instance_id).delete(timeout=self._timeout)
