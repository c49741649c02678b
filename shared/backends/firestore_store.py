"""The store on Cloud Firestore (docs/firestore-layout.md has every document).

Every change of a user's feed runs in one transaction that reads the user
document ``users/{user_id}`` (its ``seq`` counter), makes the change, writes
``users/{user_id}/changes/{seq + 1}`` and the counter. Transactions on one
document serialise, so change numbers follow commit order without holes, and
the change and its log entry are committed together or not at all.

An event is first judged on a plain read of its key and notification (no
transaction, no write): redeliveries, late events and coalesced progress stop
there. Only an event that changes something pays for the transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_transient_error
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from shared.backends.firestore_rpc import rpc_for
from shared.backends.google_errors import unavailable_on_error
from shared.backends.group_call import GroupCall
from shared.backends.user_locks import UserLocks
from shared.errors import BackendUnavailable, InvalidEventError
from shared.events import EVENT_TYPES
from shared.feed import (
    CHANGE_RETENTION,
    Applied,
    Change,
    FeedHead,
    Verdict,
    as_seen_by,
    broadcast_as_change,
    collapsed,
    decide,
    deleted_change,
    notification_change,
    updated_change,
)
from shared.notification import NewNotification, Notification
from shared.store import NotificationStore, Page

logger = logging.getLogger(__name__)

NOTIFICATIONS = "notifications"
EVENT_KEYS = "event_keys"
CHANGES = "changes"
BROADCASTS = "broadcasts"
BROADCAST_KEYS = "broadcast_keys"
COUNTERS = "counters"
# Fields of users/{user_id}: the change counter, the mutes, the user's state of each broadcast.
SEQ = "seq"
MUTED = "muted_event_types"
BROADCAST_STATE = "broadcast_state"
# Fields of a notification document that clients never see.
SOURCE = "source_key"  # the event key of the event its state came from
CHANGE_SEQ = "change_seq"  # the change that wrote that state
# A user's changes contend on one document; ride out a burst.
TRANSACTION_ATTEMPTS = 10
_T = TypeVar("_T")
_BATCH = 400  # Firestore allows 500 writes per batch; keep headroom.


def change_id(seq: int) -> str:
    """The id of ``users/{uid}/changes/{id}``: the number, fixed-width hex, so ids sort as numbers."""
    return f"{seq:016x}"


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
        self._turns = UserLocks()
        self._client: firestore.Client | None = None
        self._read_fields = self._retry(self._fields)
        # Heads of different users read while a read is in flight share the next one.
        self._heads: GroupCall[str, tuple[int, frozenset[str]]] = GroupCall(self._read_heads)

    @property
    def client(self) -> firestore.Client:
        with self._lock:
            return self._client_unlocked()

    def _client_unlocked(self) -> firestore.Client:
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

    # Applying events ------------------------------------------------------------------
    def apply(self, new: NewNotification) -> Applied:
        if new.notification.broadcast:
            return self._apply_broadcast(new)
        incoming = new.notification
        user_ref = self._user(incoming.user_id)
        key_ref = user_ref.collection(EVENT_KEYS).document(new.key)
        with _backend("apply"), self._turns.turn(incoming.user_id, self._timeout):
            # A plain read first: a redelivery, a late or a coalesced event is
            # decided here without a transaction and without any write.
            key = key_ref.get(**self._call())
            if key.exists:
                stored = user_ref.collection(NOTIFICATIONS).document(key.get("notification_id")).get(**self._call())
                early = _judge(stored, incoming, new.event_key)
                if early.verdict is not Verdict.UPDATE:
                    return early
            return self._transact("apply", lambda tx: self._apply_in(tx, new, user_ref, key_ref))

    def _apply_in(self, tx: Any, new: NewNotification, user_ref: Any, key_ref: Any) -> Applied:
        incoming = new.notification
        now = datetime.now(UTC)
        key = key_ref.get(transaction=tx)
        user = _fields(user_ref.get(transaction=tx))
        muted = incoming.event_type in set(user.get(MUTED) or ())
        if key.exists:
            doc_ref = user_ref.collection(NOTIFICATIONS).document(key.get("notification_id"))
            judged = _judge(doc_ref.get(transaction=tx), incoming, new.event_key)
            if judged.verdict is not Verdict.UPDATE or judged.notification is None:
                return judged
            state = collapsed(judged.notification, incoming, now)
            verdict = Verdict.UPDATE
        else:
            doc_ref = user_ref.collection(NOTIFICATIONS).document(incoming.id)
            tx.create(key_ref, {"notification_id": incoming.id, "expire_at": new.expire_at})
            state, verdict = incoming, Verdict.CREATE
        seq = int(user.get(SEQ) or 0) + 1
        change = notification_change(seq, state)
        tx.set(doc_ref, {**state.to_dict(), "expire_at": new.expire_at, SOURCE: new.event_key, CHANGE_SEQ: seq})
        self._log(tx, user_ref, change, now)
        tx.set(user_ref, {SEQ: seq}, merge=[SEQ])
        return Applied(verdict, state, change, muted)

    def _apply_broadcast(self, new: NewNotification) -> Applied:
        incoming = new.notification
        key_ref = self.client.collection(BROADCAST_KEYS).document(new.event_key)
        head_ref = self._broadcast_head()

        def attempt(tx: Any) -> Applied:
            key = key_ref.get(transaction=tx)
            head = _fields(head_ref.get(transaction=tx))
            if key.exists:
                stored = self.client.collection(BROADCASTS).document(key.get("notification_id")).get(transaction=tx)
                if not stored.exists:
                    return Applied(Verdict.GONE)
                data = stored.to_dict() or {}
                notification = _notification(stored)
                return Applied(Verdict.REDELIVERED, notification, notification_change(int(data[SEQ]), notification))
            seq = int(head.get(SEQ) or 0) + 1
            tx.create(key_ref, {"notification_id": incoming.id, "expire_at": new.expire_at})
            tx.create(
                self.client.collection(BROADCASTS).document(incoming.id),
                {**incoming.to_dict(), SEQ: seq, "expire_at": new.expire_at},
            )
            tx.set(head_ref, {SEQ: seq}, merge=[SEQ])
            return Applied(Verdict.CREATE, incoming, notification_change(seq, incoming))

        with _backend("apply broadcast"):
            return self._transact("apply broadcast", attempt)

    def _log(self, tx: Any, user_ref: Any, change: Change, now: datetime) -> None:
        tx.create(
            user_ref.collection(CHANGES).document(change_id(change.seq)),
            {**change.to_dict(), "expire_at": now + CHANGE_RETENTION},
        )

    def _transact(self, what: str, attempt: Callable[[Any], _T]) -> _T:
        try:
            transaction = self.client.transaction(max_attempts=TRANSACTION_ATTEMPTS)
            return cast(_T, firestore.transactional(attempt)(transaction))
        except ValueError as exc:
            # The client gives up on a contended transaction with a ValueError.
            if "transaction" not in str(exc).lower():
                raise
            raise BackendUnavailable(f"Firestore transaction contended during {what}: {exc}") from exc

    def _broadcast_head(self) -> Any:
        return self.client.collection(COUNTERS).document(BROADCASTS)

    # Reading ------------------------------------------------------------------------
    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        return self._page(user_id, limit, cursor, unread_only, self._call())

    def page_and_unread_count(
        self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False
    ) -> tuple[Page, int]:
        """Both read in one read-only transaction, so from one snapshot of the database."""

        def both(transaction: Any) -> tuple[Page, int]:
            read = {"transaction": transaction, **self._call()}
            return self._page(user_id, limit, cursor, unread_only, read), self._unread_count(user_id, read)

        with _backend("page"):
            return cast(tuple[Page, int], firestore.transactional(both)(self.client.transaction(read_only=True)))

    def _page(self, user_id: str, limit: int, cursor: str | None, unread_only: bool, read: dict[str, Any]) -> Page:
        query = self._notifications(user_id)
        if unread_only:
            query = query.where(filter=FieldFilter("read", "==", False))
        if cursor:
            query = query.where(filter=FieldFilter("id", "<", cursor))
        query = query.order_by("id", direction=firestore.Query.DESCENDING).limit(limit + 1)
        with _backend("page"):
            found = [_notification(s) for s in query.stream(**read)]
            state = self._broadcast_state(user_id, read)
            hidden = sum(1 for value in state.values() if value == "deleted" or (unread_only and value == "read"))
            broadcasts: Any = self.client.collection(BROADCASTS)
            if cursor:
                broadcasts = broadcasts.where(filter=FieldFilter("id", "<", cursor))
            broadcasts = broadcasts.order_by("id", direction=firestore.Query.DESCENDING).limit(limit + 1 + hidden)
            for snapshot in broadcasts.stream(**read):
                seen = state.get(snapshot.id)
                if seen == "deleted" or (unread_only and seen == "read"):
                    continue
                found.append(as_seen_by(_notification(snapshot), user_id, seen == "read"))
        found.sort(key=lambda n: n.id, reverse=True)
        more = len(found) > limit
        found = found[:limit]
        return Page(found, found[-1].id if more and found else None)

    def _broadcast_state(self, user_id: str, read: dict[str, Any]) -> dict[str, str]:
        user = _fields(self._user(user_id).get(field_paths=[BROADCAST_STATE], **read))
        state = user.get(BROADCAST_STATE)
        return dict(state) if isinstance(state, dict) else {}

    def head(self, user_id: str, broadcast_seq: int | None = None) -> FeedHead:
        if broadcast_seq is not None:
            # Every connect reads the head: one document instead of two.
            with _backend("feed head"):
                seq, muted = self._user_head(user_id)
            return FeedHead(seq, broadcast_seq, muted)
        with _backend("feed head"):
            snapshots = {s.reference.path: _fields(s) for s in self.client.get_all(
                [self._user(user_id), self._broadcast_head()], field_paths=[SEQ, MUTED], **self._call()
            )}
        user = snapshots.get(self._user(user_id).path, {})
        broadcasts = snapshots.get(self._broadcast_head().path, {})
        return FeedHead(int(user.get(SEQ) or 0), int(broadcasts.get(SEQ) or 0), frozenset(user.get(MUTED) or ()))

    def _user_head(self, user_id: str) -> tuple[int, frozenset[str]]:
        """The user's change number and muted event types (every connect reads them)."""
        return self._heads.submit(self._user(user_id)._document_path)

    def _read_heads(self, paths: list[str]) -> list[tuple[int, frozenset[str]]]:
        """Users' heads in one BatchGetDocuments with a field mask (``FirestoreRpc.fields``)."""
        return [(0, frozenset()) if fields is None else _head_fields(fields) for fields in self._read_fields(paths)]

    def _fields(self, paths: list[str]) -> list[Any | None]:
        return rpc_for(self.client, self._timeout).fields(paths, (SEQ, MUTED))

    def changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        query = (
            self._user(user_id)
            .collection(CHANGES)
            .where(filter=FieldFilter(SEQ, ">", after_seq))
            .order_by(SEQ)
            .limit(limit)
        )
        with _backend("replay"):
            return [Change.from_dict(s.to_dict() or {}) for s in query.stream(**self._call())]

    def broadcast_changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        query = (
            self.client.collection(BROADCASTS).where(filter=FieldFilter(SEQ, ">", after_seq)).order_by(SEQ).limit(limit)
        )
        with _backend("broadcast replay"):
            found = list(query.stream(**self._call()))
            state = self._broadcast_state(user_id, self._call()) if found else {}
        return [
            broadcast_as_change(int((s.to_dict() or {})[SEQ]), _notification(s), user_id, state.get(s.id))
            for s in found
        ]

    def unread_count(self, user_id: str) -> int:
        return self._unread_count(user_id, self._call())

    def _unread_count(self, user_id: str, read: dict[str, Any]) -> int:
        with _backend("unread count"):
            user = _fields(self._user(user_id).get(field_paths=[MUTED, BROADCAST_STATE], **read))
            muted = set(user.get(MUTED) or ())
            query = self._notifications(user_id).where(filter=FieldFilter("read", "==", False))
            if muted:
                shown = sorted(EVENT_TYPES - muted)
                if not shown:
                    return 0
                query = query.where(filter=FieldFilter("event_type", "in", shown))
            result = query.count(alias="n").get(**read)
            count = int(result[0][0].value) if result and result[0] else 0
            state = user.get(BROADCAST_STATE) or {}
            broadcasts = self.client.collection(BROADCASTS).select(["event_type"]).stream(**read)
            count += sum(1 for s in broadcasts if s.id not in state and s.get("event_type") not in muted)
        return count

    # Changing -----------------------------------------------------------------------
    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[Change]:
        collection = self._notifications(user_id)
        with _backend("set read"):
            if ids is None:
                query = collection.where(filter=FieldFilter("read", "==", not read)).select(["id"])
                wanted = [s.id for s in query.stream(**self._call())]
                wanted += [s.id for s in self.client.collection(BROADCASTS).select([]).stream(**self._call())]
            else:
                wanted = list(dict.fromkeys(ids))
            made = [self._set_read_chunk(user_id, chunk, read) for chunk in _chunks(wanted)]
        return [change for change in made if change is not None]

    def _set_read_chunk(self, user_id: str, ids: list[str], read: bool) -> Change | None:
        user_ref = self._user(user_id)
        collection = self._notifications(user_id)

        def attempt(tx: Any) -> Change | None:
            user = _fields(user_ref.get(transaction=tx))
            refs = [collection.document(i) for i in ids]
            docs = {s.id: s for s in self.client.get_all(refs, field_paths=["read"], transaction=tx)}
            changed = [i for i in ids if docs.get(i) is not None and docs[i].exists and docs[i].get("read") != read]
            state = dict(user.get(BROADCAST_STATE) or {})
            rest = [i for i in ids if i not in changed and not (docs.get(i) is not None and docs[i].exists)]
            if rest:
                broadcast_refs = [self.client.collection(BROADCASTS).document(i) for i in rest]
                for snapshot in self.client.get_all(broadcast_refs, field_paths=["id"], transaction=tx):
                    seen = state.get(snapshot.id)
                    if snapshot.exists and seen != "deleted" and (seen == "read") != read:
                        if read:
                            state[snapshot.id] = "read"
                        else:
                            state.pop(snapshot.id, None)
                        changed.append(snapshot.id)
            if not changed:
                return None
            for notification_id in changed:
                if notification_id in docs and docs[notification_id].exists:
                    tx.update(collection.document(notification_id), {"read": read})
            seq = int(user.get(SEQ) or 0) + 1
            change = updated_change(seq, sorted(changed), read)
            self._log(tx, user_ref, change, datetime.now(UTC))
            tx.set(user_ref, {SEQ: seq, BROADCAST_STATE: state}, merge=[SEQ, BROADCAST_STATE])
            return change

        return self._transact("set read", attempt)

    def delete(self, user_id: str, notification_id: str) -> Change | None:
        user_ref = self._user(user_id)
        ref = self._notifications(user_id).document(notification_id)
        broadcast_ref = self.client.collection(BROADCASTS).document(notification_id)

        def attempt(tx: Any) -> Change | None:
            user = _fields(user_ref.get(transaction=tx))
            state = dict(user.get(BROADCAST_STATE) or {})
            if ref.get(field_paths=["id"], transaction=tx).exists:
                tx.delete(ref)
            elif state.get(notification_id) != "deleted" and broadcast_ref.get(
                field_paths=["id"], transaction=tx
            ).exists:
                state[notification_id] = "deleted"
            else:
                return None
            seq = int(user.get(SEQ) or 0) + 1
            change = deleted_change(seq, [notification_id])
            self._log(tx, user_ref, change, datetime.now(UTC))
            tx.set(user_ref, {SEQ: seq, BROADCAST_STATE: state}, merge=[SEQ, BROADCAST_STATE])
            return change

        with _backend("delete"):
            return self._transact("delete", attempt)

    def delete_all(self, user_id: str) -> tuple[int, Change | None]:
        """Full batches first, each deleted with a change naming its ids; then the rest with ``{"all": true}``.

        The last transaction reads the user document before it queries what is
        left: every new notification writes that document, so one that commits
        concurrently is either deleted by it or numbered after it, never lost
        from a client's view while still stored.
        """
        user_ref = self._user(user_id)
        query = self._notifications(user_id).select([])
        total = 0
        with _backend("delete all"):
            while True:
                refs = [s.reference for s in query.limit(_BATCH).stream(**self._call())]
                if len(refs) < _BATCH:
                    break
                self._transact("delete all", partial(self._delete_chunk, user_ref=user_ref, refs=refs))
                total += len(refs)

            def last(tx: Any) -> tuple[int, Change | None]:
                user = _fields(user_ref.get(transaction=tx))
                rest = [s.reference for s in query.stream(transaction=tx)]
                state = dict(user.get(BROADCAST_STATE) or {})
                shown = [s.id for s in self.client.collection(BROADCASTS).select([]).stream(transaction=tx)]
                hidden = [i for i in shown if state.get(i) != "deleted"]
                if not rest and not hidden:
                    return 0, None
                for ref in rest:
                    tx.delete(ref)
                state.update(dict.fromkeys(hidden, "deleted"))
                seq = int(user.get(SEQ) or 0) + 1
                change = deleted_change(seq, None)
                self._log(tx, user_ref, change, datetime.now(UTC))
                tx.set(user_ref, {SEQ: seq, BROADCAST_STATE: state}, merge=[SEQ, BROADCAST_STATE])
                return len(rest) + len(hidden), change

            count, change = self._transact("delete all", last)
        return total + count, change

    def _delete_chunk(self, tx: Any, *, user_ref: Any, refs: list[Any]) -> Change:
        user = _fields(user_ref.get(transaction=tx))
        for ref in refs:
            tx.delete(ref)
        seq = int(user.get(SEQ) or 0) + 1
        change = deleted_change(seq, sorted(ref.id for ref in refs))
        self._log(tx, user_ref, change, datetime.now(UTC))
        tx.set(user_ref, {SEQ: seq}, merge=[SEQ])
        return change

    # Preferences --------------------------------------------------------------------
    def muted(self, user_id: str) -> frozenset[str]:
        with _backend("preferences"):
            user = _fields(self._user(user_id).get(field_paths=[MUTED], **self._call()))
        return frozenset(user.get(MUTED) or ())

    def set_muted(self, user_id: str, event_types: frozenset[str]) -> frozenset[str]:
        with _backend("preferences"):
            self._user(user_id).set({MUTED: sorted(event_types)}, merge=[MUTED], **self._call())
        return frozenset(event_types)

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


def _notification(snapshot: Any) -> Notification:
    data = snapshot.to_dict() or {}
    data["id"] = snapshot.id
    return Notification.from_dict(data)


def _head_fields(fields: Any) -> tuple[int, frozenset[str]]:
    """(change number, muted event types) from a raw document's fields."""
    seq = 0
    if SEQ in fields:
        value = fields[SEQ]
        kind = value.WhichOneof("value_type")
        if kind == "integer_value":
            seq = int(value.integer_value)
        elif kind == "double_value":
            seq = int(value.double_value)
    muted: frozenset[str] = frozenset()
    if MUTED in fields and fields[MUTED].WhichOneof("value_type") == "array_value":
        muted = frozenset(
            v.string_value for v in fields[MUTED].array_value.values if v.WhichOneof("value_type") == "string_value"
        )
    return seq, muted


def _fields(snapshot: Any) -> dict[str, Any]:
    data = snapshot.to_dict() if snapshot.exists else None
    return data if isinstance(data, dict) else {}


def _judge(stored: Any, incoming: Notification, event_key: str) -> Applied:
    """What an event does to the stored notification its key names (a snapshot, maybe missing)."""
    if not stored.exists:
        return Applied(Verdict.GONE)
    data = stored.to_dict() or {}
    notification = _notification(stored)
    verdict = decide(notification, data.get(SOURCE), incoming, event_key)
    if verdict is Verdict.REDELIVERED:
        return Applied(verdict, notification, notification_change(int(data.get(CHANGE_SEQ) or 0), notification))
    return Applied(verdict, notification)
