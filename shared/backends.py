"""The process's backends, created lazily on first use and reused.

Module-level clients survive between invocations of a warm Cloud Function, so
connections are not set up again for every event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from shared.channel import Channel, DeadLetterSink
from shared.config import Settings, get_settings
from shared.store import NotificationStore


@dataclass(frozen=True)
class Backends:
    store: NotificationStore
    channel: Channel
    dead_letters: DeadLetterSink

    def close(self) -> None:
        self.channel.close()
        self.store.close()


_lock = threading.Lock()
_backends: Backends | None = None


def build_backends(settings: Settings) -> Backends:
    if settings.backend == "memory":
        from shared.memory import MemoryChannel, MemoryDeadLetters, MemoryStore

        return Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    from shared.firestore_store import FirestoreStore
    from shared.pubsub_channel import PubSubChannel, PubSubDeadLetters

    channel = PubSubChannel(settings.project_id, settings.notifications_topic, timeout=settings.backend_timeout_seconds)
    return Backends(
        FirestoreStore(settings.project_id, timeout=settings.backend_timeout_seconds),
        channel,
        PubSubDeadLetters(channel, settings.dead_letter_topic),
    )


def get_backends() -> Backends:
    global _backends
    with _lock:
        if _backends is None:
            _backends = build_backends(get_settings())
        return _backends


def set_backends(backends: Backends | None) -> None:
    """Install backends (embedded local run, tests), or forget them with None."""
    global _backends
    with _lock:
        _backends = backends
