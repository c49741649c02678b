"""Embedded in-memory channel and store, behind the same interfaces as the real ones.

For ``make run`` on a machine without the emulators, and for fast unit tests.
One process only: nothing here is shared between processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from shared.channel import (
    ALL_INSTANCES,
    BatchHandler,
    Channel,
    ChannelMessage,
    DeadLetterSink,
    GapHandler,
    Router,
    Subscription,
)
from shared.feed import (
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
from shared.registry import ConnectionRegistry
from shared.store import NotificationStore, Page


class MemoryDirectory:
    """Which stream instance holds which user's streams, for one process.

    The memory registries of every instance in the process record here, and the
    memory channel routes by it, the way the Firestore registry and Pub/Sub do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, str]] = {}  # user -> connection -> instance

    def instances_of(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        with self._lock:
            return {u: set(self._live[u].values()) for u in user_ids if u in self._live}

    def add(self, user_id: str, connection_id: str, instance_id: str, limit: int) -> bool:
        with self._lock:
            live = self._live.setdefault(user_id, {})
            if len(live) >= limit:
                return False
            live[connection_id] = instance_id
            return True

    def remove(self, user_id: str, connection_id: str) -> None:
        with self._lock:
            live = self._live.get(user_id)
            if live is not None:
                live.pop(connection_id, None)
                if not live:
                    del self._live[user_id]

    def drop_instance(self, instance_id: str) -> None:
        with self._lock:
            for user_id in list(self._live):
                live = {c: i for c, i in self._live[user_id].items() if i != instance_id}
                if live:
                    self._live[user_id] = live
                else:
                    del self._live[user_id]


class MemoryChannel(Channel):
    def __init__(self, router: Router | None = None) -> None:
        super().__init__(router)
        self._lock = threading.Lock()
        self._handlers: dict[str, BatchHandler] = {}
        self.published: list[ChannelMessage] = []

    def send(self, target: str, messages: Sequence[ChannelMessage]) -> None:
        with self._lock:
            self.published.extend(messages)
            del self.published[:-10_000]  # bounded: a long local run must not grow forever
            if target == ALL_INSTANCES:
                handlers = list(self._handlers.values())
            else:
                handlers = [self._handlers[target]] if target in self._handlers else []
        for handler in handlers:
            handler(list(messages))

    def subscribe(
        self,
        instance_id: str,
        handler: BatchHandler,
        on_gap: GapHandler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Subscription:
        with self._lock:
            self._handlers[instance_id] = handler
            return _MemorySubscription(self, instance_id)

    def _unsubscribe(self, instance_id: str) -> None:
        with self._lock:
            self._handlers.pop(instance_id, None)


class _MemorySubscription(Subscription):
    def __init__(self, channel: MemoryChannel, instance_id: str) -> None:
        self._channel = channel
        self._instance_id = instance_id

    @property
    def name(self) -> str:
        return f"memory-subscription-{self._instance_id}"

    def close(self, deadline: float | None = None) -> None:
        self._channel._unsubscribe(self._instance_id)


class MemoryDeadLetters(DeadLetterSink):
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []

    def send(self, data: bytes, attributes: Mapping[str, str]) -> None:
        self.messages.append((data, dict(attributes)))


class _UserFeed:
    __slots__ = ("broadcast_state", "changes", "keys", "muted", "notifications", "seq", "sources")

    def __init__(self) -> None:
        self.seq = 0
        self.notifications: dict[str, Notification] = {}
        # collapse/event key -> notification id; notification id -> (key of the event its state came from, seq)
        self.keys: dict[str, str] = {}
        self.sources: dict[str, tuple[str, int]] = {}
        self.changes: list[Change] = []
        self.muted: frozenset[str] = frozenset()
        self.broadcast_state: dict[str, str] = {}  # broadcast id -> "read" | "deleted"


class MemoryStore(NotificationStore):
    """One process's feeds; the change log keeps the last ``CHANGE_LOG`` changes of each user."""

    CHANGE_LOG = 10_000

    def __init__(self) -> None:
        # Re-entrant: page_and_unread_count holds it across page and unread_count.
        self._lock = threading.RLock()
        self._users: dict[str, _UserFeed] = {}
        self._broadcasts: list[tuple[int, Notification, str]] = []  # (seq, notification, event key)
        self._broadcast_keys: dict[str, str] = {}

    def _user(self, user_id: str) -> _UserFeed:
        return self._users.setdefault(user_id, _UserFeed())

    def _log(self, user: _UserFeed, make: Callable[[int], Change]) -> Change:
        user.seq += 1
        change = make(user.seq)
        user.changes.append(change)
        del user.changes[: -self.CHANGE_LOG]
        return change

    def apply(self, new: NewNotification) -> Applied:
        if new.notification.broadcast:
            return self._apply_broadcast(new)
        incoming = new.notification
        now = datetime.now(UTC)
        with self._lock:
            user = self._user(incoming.user_id)
            muted = incoming.event_type in user.muted
            known = user.keys.get(new.key)
            if known is None:
                user.keys[new.key] = incoming.id
                user.notifications[incoming.id] = incoming
                change = self._log(user, lambda seq: notification_change(seq, incoming))
                user.sources[incoming.id] = (new.event_key, change.seq)
                return Applied(Verdict.CREATE, incoming, change, muted)
            stored = user.notifications.get(known)
            source, seq = user.sources.get(known, ("", 0))
            verdict = decide(stored, source, incoming, new.event_key)
            if stored is None or verdict in (Verdict.GONE, Verdict.STALE, Verdict.COALESCED):
                return Applied(verdict, stored)
            if verdict is Verdict.REDELIVERED:
                return Applied(verdict, stored, notification_change(seq, stored), stored.event_type in user.muted)
            state = collapsed(stored, incoming, now)
            user.notifications[known] = state
            change = self._log(user, lambda seq: notification_change(seq, state))
            user.sources[known] = (new.event_key, change.seq)
            return Applied(Verdict.UPDATE, state, change, muted)

    def _apply_broadcast(self, new: NewNotification) -> Applied:
        with self._lock:
            known = self._broadcast_keys.get(new.event_key)
            if known is not None:
                for seq, stored, _ in self._broadcasts:
                    if stored.id == known:
                        return Applied(Verdict.REDELIVERED, stored, notification_change(seq, stored))
                return Applied(Verdict.GONE)
            seq = (self._broadcasts[-1][0] if self._broadcasts else 0) + 1
            self._broadcasts.append((seq, new.notification, new.event_key))
            self._broadcast_keys[new.event_key] = new.notification.id
        return Applied(Verdict.CREATE, new.notification, notification_change(seq, new.notification))

    def _visible(self, user_id: str, user: _UserFeed) -> list[Notification]:
        """The user's notifications and the broadcasts they have not deleted, by id."""
        shown = list(user.notifications.values())
        for _, broadcast, _ in self._broadcasts:
            state = user.broadcast_state.get(broadcast.id)
            if state != "deleted":
                shown.append(as_seen_by(broadcast, user_id, state == "read"))
        return sorted(shown, key=lambda n: n.id)

    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        with self._lock:
            found = [
                n
                for n in reversed(self._visible(user_id, self._user(user_id)))
                if (cursor is None or n.id < cursor) and not (unread_only and n.read)
            ]
        page = found[:limit]
        return Page(page, page[-1].id if len(found) > limit and page else None)

    def page_and_unread_count(
        self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False
    ) -> tuple[Page, int]:
        with self._lock:
            return self.page(user_id, limit, cursor, unread_only), self.unread_count(user_id)

    def head(self, user_id: str, broadcast_seq: int | None = None) -> FeedHead:
        with self._lock:
            user = self._users.get(user_id)
            if broadcast_seq is None:
                broadcast_seq = self._broadcasts[-1][0] if self._broadcasts else 0
            if user is None:
                return FeedHead(0, broadcast_seq)
            return FeedHead(user.seq, broadcast_seq, user.muted)

    def changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        with self._lock:
            user = self._users.get(user_id)
            return [] if user is None else [c for c in user.changes if c.seq > after_seq][:limit]

    def broadcast_changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        with self._lock:
            state = dict(self._user(user_id).broadcast_state)
            found = [(seq, b) for seq, b, _ in self._broadcasts if seq > after_seq][:limit]
        return [broadcast_as_change(seq, b, user_id, state.get(b.id)) for seq, b in found]

    def unread_count(self, user_id: str) -> int:
        with self._lock:
            user = self._user(user_id)
            return sum(1 for n in self._visible(user_id, user) if not n.read and n.event_type not in user.muted)

    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[Change]:
        changed = []
        with self._lock:
            user = self._user(user_id)
            broadcast_ids = {b.id for _, b, _ in self._broadcasts}
            wanted = list(user.notifications) + sorted(broadcast_ids) if ids is None else list(dict.fromkeys(ids))
            for notification_id in wanted:
                n = user.notifications.get(notification_id)
                if n is not None and n.read != read:
                    user.notifications[notification_id] = replace(n, read=read)
                    changed.append(notification_id)
                elif notification_id in broadcast_ids:
                    state = user.broadcast_state.get(notification_id)
                    if state != "deleted" and (state == "read") != read:
                        if read:
                            user.broadcast_state[notification_id] = "read"
                        else:
                            user.broadcast_state.pop(notification_id, None)
                        changed.append(notification_id)
            if not changed:
                return []
            return [self._log(user, lambda seq: updated_change(seq, sorted(changed), read))]

    def delete(self, user_id: str, notification_id: str) -> Change | None:
        with self._lock:
            user = self._user(user_id)
            if user.notifications.pop(notification_id, None) is None:
                if notification_id not in {b.id for _, b, _ in self._broadcasts}:
                    return None
                if user.broadcast_state.get(notification_id) == "deleted":
                    return None
                user.broadcast_state[notification_id] = "deleted"
            return self._log(user, lambda seq: deleted_change(seq, [notification_id]))

    def delete_all(self, user_id: str) -> tuple[int, Change | None]:
        with self._lock:
            user = self._user(user_id)
            hidden = [b.id for _, b, _ in self._broadcasts if user.broadcast_state.get(b.id) != "deleted"]
            count = len(user.notifications) + len(hidden)
            user.notifications.clear()
            user.broadcast_state.update(dict.fromkeys(hidden, "deleted"))
            if not count:
                return 0, None
            return count, self._log(user, lambda seq: deleted_change(seq, None))

    def muted(self, user_id: str) -> frozenset[str]:
        with self._lock:
            user = self._users.get(user_id)
            return frozenset() if user is None else user.muted

    def set_muted(self, user_id: str, event_types: frozenset[str]) -> frozenset[str]:
        with self._lock:
            self._user(user_id).muted = frozenset(event_types)
        return frozenset(event_types)

    def ping(self) -> None:
        return None


class MemoryRegistry(ConnectionRegistry):
    """One process only (NOTIFICATIONS_BACKEND=memory): instances record in a shared directory."""

    def __init__(
        self, instance_id: str, limit: int, heartbeat_interval: float, directory: MemoryDirectory | None = None
    ) -> None:
        super().__init__(instance_id, limit, heartbeat_interval)
        self.directory = directory or MemoryDirectory()

    def start(self, subscription: str) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        return self.directory.add(user_id, connection_id, self.instance_id, self.limit)

    def release(self, user_id: str, connection_id: str) -> None:
        self.directory.remove(user_id, connection_id)

    def stop(self) -> None:
        self.directory.drop_instance(self.instance_id)
