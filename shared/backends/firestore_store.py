"""The store on Cloud Firestore.

Layout:
  users/{user_id}/notifications/{id}   the notification, plus ``expire_at`` for the TTL policy
  users/{user_id}/event_keys/{key}     which id an event was stored under (idempotency)

A new event is written as one batch that *creates* both documents: if the key
exists, the whole batch fails and nothing is written twice, with no transaction
to contend on. One commit (two writes) per new event; a redelivery costs one
failed commit and two reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.backends.google_errors import unavailable_on_error
from shared.errors import BackendUnavailable, InvalidEventError
from shared.notification import NewNotification, Notification
from shared.store import NotificationStore, Page

logger = logging.getLogger(__name__)

NOTIFICATIONS = "notifications"
EVENT_KEYS = "event_keys"
_BATCH = 400  # Firestore allows 500 writes per batch; keep headroom.


@contextmanager
def _backend(what: str) -> Iterator[None]:
    with unavailable_on_error(what, "Firestore"):
        try:
            yield
        except gexc.InvalidArgument as exc:
            # What Firestore refuses will never be stored: dead-letter it, do not retry.
            raise InvalidEventError(f"Firestore refused {what}: {exc.message}") from exc


class FirestoreStore(NotificationStore):
    def __init__(self, project_id: str, *, timeout: float = 10.0, database: str | None = None) -> None:
        self._project_id = project_id
        self._database = database
        self._timeout = timeout
        self._retry = Retry(predicate=if_transient_error, initial=0.1, maximum=1.0, timeout=timeout)
        self._lock = threading.Lock()
        self._client: firestore.Client | None = None

    @property
    def client(self) -> firestore.Client:
        with self._lock:
            if self._client is None:
                kwargs: dict[str, Any] = {"project": self._project_id}
                if self._database:
                    kwargs["database"] = self._database
                self._client = firestore.Client(**kwargs)
            return self._client

    def _user(self, user_id: str) -> Any:
        return self.client.collection("users").document(user_id)

    def _notifications(self, user_id: str) -> Any:
        return self._user(user_id).collection(NOTIFICATIONS)

    def _call(self) -> dict[str, Any]:
        return {"retry": self._retry, "timeout": self._timeout}

    def persist(self, new: NewNotification) -> tuple[Notification | None, bool]:
        notification = new.notification
        user = self._user(notification.user_id)
        key_ref = user.collection(EVENT_KEYS).document(new.event_key)
        doc_ref = user.collection(NOTIFICATIONS).document(notification.id)
        batch = self.client.batch()
        batch.create(key_ref, {"notification_id": notification.id, "expire_at": new.expire_at})
        batch.create(doc_ref, {**notification.to_dict(), "expire_at": new.expire_at})
        with _backend("persist"):
            try:
                batch.commit(**self._call())
                return notification, True
            except (gexc.AlreadyExists, gexc.Conflict):
                pass
            key = key_ref.get(**self._call())
            if not key.exists:
                # Lost a race with a cleanup of the key; a retry will settle it.
                raise BackendUnavailable("idempotency key vanished during persist")
            stored = user.collection(NOTIFICATIONS).document(key.get("notification_id")).get(**self._call())
            return (_from_snapshot(stored) if stored.exists else None), False

    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        query = self._notifications(user_id)
        if unread_only:
            query = query.where(filter=FieldFilter("read", "==", False))
        if cursor:
            query = query.where(filter=FieldFilter("id", "<", cursor))
        query = query.order_by("id", direction=firestore.Query.DESCENDING).limit(limit + 1)
        with _backend("page"):
            found = [_from_snapshot(s) for s in query.stream(**self._call())]
        more = len(found) > limit
        found = found[:limit]
        return Page(found, found[-1].id if more and found else None)

    def after(self, user_id: str, after_id: str, limit: int) -> list[Notification]:
        query = self._notifications(user_id).where(filter=FieldFilter("id", ">", after_id)).order_by("id").limit(limit)
        with _backend("replay"):
            return [_from_snapshot(s) for s in query.stream(**self._call())]

    def unread_count(self, user_id: str) -> int:
        query = self._notifications(user_id).where(filter=FieldFilter("read", "==", False)).count(alias="n")
        with _backend("unread count"):
            result = query.get(**self._call())
        return int(result[0][0].value) if result and result[0] else 0

    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[str]:
        collection = self._notifications(user_id)
        with _backend("set read"):
            if ids is None:
                query = collection.where(filter=FieldFilter("read", "==", not read)).select(["id"])
                refs = [s.reference for s in query.stream(**self._call())]
            else:
                snapshots = self.client.get_all(
                    [collection.document(i) for i in dict.fromkeys(ids)], field_paths=["read"], **self._call()
                )
                refs = [s.reference for s in snapshots if s.exists and s.get("read") != read]
            for chunk in _chunks(refs):
                batch = self.client.batch()
                for ref in chunk:
                    batch.update(ref, {"read": read})
                batch.commit(**self._call())
        return sorted(ref.id for ref in refs)

    def delete(self, user_id: str, notification_id: str) -> bool:
        ref = self._notifications(user_id).document(notification_id)
        with _backend("delete"):
            if not ref.get(field_paths=["id"], **self._call()).exists:
                return False
            ref.delete(**self._call())
        return True

    def delete_all(self, user_id: str) -> int:
        query = self._notifications(user_id).select(["id"])
        with _backend("delete all"):
            refs = [s.reference for s in query.stream(**self._call())]
            self._delete_refs(refs)
        return len(refs)

    def _delete_refs(self, refs: list[Any]) -> None:
        """Batched deletes: one commit per ``_BATCH`` documents, not one round trip each."""
        for chunk in _chunks(refs):
            batch = self.client.batch()
            for ref in chunk:
                batch.delete(ref)
            batch.commit(**self._call())

    def ping(self) -> None:
        with _backend("health check"):
            list(self.client.collection("_health").limit(1).stream(retry=None, timeout=min(self._timeout, 5.0)))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _from_snapshot(snapshot: Any) -> Notification:
    data = snapshot.to_dict() or {}
    data["id"] = snapshot.id
    return Notification.from_dict(data)
