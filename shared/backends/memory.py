"""Embedded in-memory channel and store, behind the same interfaces as the real ones.

For ``make run`` on a machine without the emulators, and for fast unit tests.
One process only: nothing here is shared between processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime

from shared.channel import Channel, ChannelMessage, DeadLetterSink, GapHandler, MessageHandler, Subscription
from shared.notification import NewNotification, Notification
from shared.registry import ConnectionRegistry
from shared.store import NotificationStore, Page


class MemoryChannel(Channel):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[int, MessageHandler] = {}
        self._next = 0
        self.published: list[ChannelMessage] = []

    def publish_many(self, messages: Iterable[ChannelMessage]) -> None:
        batch = list(messages)
        with self._lock:
            self.published.extend(batch)
            del self.published[:-10_000]  # bounded: a long local run must not grow forever
            handlers = list(self._handlers.values())
        for message in batch:
            for handler in handlers:
                handler(message)

    def subscribe(self, instance_id: str, handler: MessageHandler, on_gap: GapHandler | None = None) -> Subscription:
        with self._lock:
            self._next += 1
            self._handlers[self._next] = handler
            return _MemorySubscription(self, self._next)

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._handlers.pop(key, None)


class _MemorySubscription(Subscription):
    def __init__(self, channel: MemoryChannel, key: int) -> None:
        self._channel = channel
        self._key = key

    @property
    def name(self) -> str:
        return f"memory-subscription-{self._key}"

    def close(self) -> None:
        self._channel._unsubscribe(self._key)


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
