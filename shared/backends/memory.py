"""Embedded in-memory channel and store, behind the same interfaces as the real ones.

For ``make run`` on a machine without the emulators, and for fast unit tests.
One process only: nothing here is shared between processes.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

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

    def subscribe(self, instance_id: str, handler: BatchHandler, on_gap: GapHandler | None = None) -> Subscription:
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


class MemoryStore(NotificationStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, tuple[Notification, datetime]]] = {}
        self._keys: dict[tuple[str, str], tuple[str, datetime]] = {}

    def persist(self, new: NewNotification) -> tuple[Notification | None, bool]:
        notification = new.notification
        with self._lock:
            known = self._keys.get((notification.user_id, new.event_key))
            user = self._users.setdefault(notification.user_id, {})
            if known is not None:
                stored = user.get(known[0])
                return (stored[0] if stored else None), False
            self._keys[(notification.user_id, new.event_key)] = (notification.id, new.expire_at)
            user[notification.id] = (notification, new.expire_at)
            return notification, True

    def _sorted(self, user_id: str) -> list[Notification]:
        return [n for _, (n, _) in sorted(self._users.get(user_id, {}).items())]

    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        with self._lock:
            found = [
                n
                for n in reversed(self._sorted(user_id))
                if (cursor is None or n.id < cursor) and not (unread_only and n.read)
            ]
        page = found[:limit]
        return Page(page, page[-1].id if len(found) > limit and page else None)

    def after(self, user_id: str, after_id: str, limit: int) -> list[Notification]:
        with self._lock:
            return [n for n in self._sorted(user_id) if n.id > after_id][:limit]

    def unread_count(self, user_id: str) -> int:
        with self._lock:
            return sum(1 for n, _ in self._users.get(user_id, {}).values() if not n.read)

    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[str]:
        changed = []
        with self._lock:
            user = self._users.get(user_id, {})
            for notification_id in list(user) if ids is None else dict.fromkeys(ids):
                entry = user.get(notification_id)
                if entry is not None and entry[0].read != read:
                    n = entry[0]
                    user[notification_id] = (Notification.from_dict({**n.to_dict(), "read": read}), entry[1])
                    changed.append(notification_id)
        return sorted(changed)

    def delete(self, user_id: str, notification_id: str) -> bool:
        with self._lock:
            return self._users.get(user_id, {}).pop(notification_id, None) is not None

    def delete_all(self, user_id: str) -> int:
        with self._lock:
            removed = self._users.pop(user_id, {})
        return len(removed)

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
