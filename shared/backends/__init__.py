"""The process's backends, chosen in this one place, created lazily on first use and reused.

Module-level clients survive between invocations of a warm Cloud Function, so
connections are not set up again for every event. Nothing outside this package
asks which backend it got: what differs (the connection registry, the channel's
subscription) is built here or behind the interfaces of ``shared``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryRegistry, MemoryStore
from shared.channel import Channel, DeadLetterSink
from shared.config import Settings, get_settings
from shared.registry import ConnectionRegistry
from shared.store import NotificationStore

# (instance_id, streams allowed per user, heartbeat interval in seconds) -> registry
RegistryFactory = Callable[[str, int, float], ConnectionRegistry]


@dataclass(frozen=True)
class Backends:
    store: NotificationStore
    channel: Channel
    dead_letters: DeadLetterSink
    # One process's registry unless the backend has a shared one (Firestore).
    registry: RegistryFactory = MemoryRegistry

    def close(self) -> None:
        self.channel.close()
        self.store.close()


_lock = threading.Lock()
_backends: Backends | None = None


def build_backends(settings: Settings) -> Backends:
    if settings.backend == "memory":
        return memory_backends()
    from shared.backends.firestore_registry import FirestoreRegistry
    from shared.backends.firestore_store import FirestoreStore
    from shared.backends.pubsub_channel import PubSubChannel
    from shared.backends.pubsub_dead_letters import PubSubDeadLetters

    timeout = settings.backend_timeout_seconds
    store = FirestoreStore(settings.project_id, timeout=timeout)
    channel = PubSubChannel(settings.project_id, settings.notifications_topic, timeout=timeout)

    def registry(instance_id: str, limit: int, heartbeat_interval: float) -> ConnectionRegistry:
        return FirestoreRegistry(store.client, instance_id, limit, heartbeat_interval, timeout=timeout)

    dead_letters = PubSubDeadLetters(settings.project_id, settings.dead_letter_topic, timeout=timeout)
    return Backends(store, channel, dead_letters, registry)


def memory_backends() -> Backends:
    """Embedded backends for one process (local runs without emulators, fast tests)."""
    return Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters(), MemoryRegistry)


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
