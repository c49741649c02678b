"""The process's backends, chosen in this one place, created lazily on first use and reused.

Module-level clients survive between invocations of a warm Cloud Function, so
connections are not set up again for every event. Nothing outside this package
asks which backend it got: what differs (the connection registry, the channel's
subscription) is built here or behind the interfaces of ``shared``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryDirectory, MemoryRegistry, MemoryStore
from shared.backends.memory_tickets import MemoryRedeemedTickets
from shared.channel import Channel, DeadLetterSink
from shared.config import Settings, get_settings
from shared.killswitch import KillSwitch, MemorySwitchDocument
from shared.redeemed_tickets import RedeemedTickets
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
    # Stream tickets already used; shared by every instance with Firestore.
    tickets: RedeemedTickets = field(default_factory=MemoryRedeemedTickets)
    # The operator's switches (config/notifications on Firestore); one process's otherwise.
    killswitch: KillSwitch = field(default_factory=lambda: KillSwitch(MemorySwitchDocument()))

    def close(self) -> None:
        self.channel.close()
        self.store.close()


_lock = threading.Lock()
_backends: Backends | None = None


def build_backends(settings: Settings) -> Backends:
    if settings.backend == "memory":
        return memory_backends()
    from shared.backends.firestore_config import FirestoreSwitchDocument
    from shared.backends.firestore_registry import FirestoreDirectory, FirestoreRegistry
    from shared.backends.firestore_store import FirestoreStore
    from shared.backends.firestore_tickets import FirestoreRedeemedTickets
    from shared.backends.pubsub_channel import PubSubChannel
    from shared.backends.pubsub_dead_letters import PubSubDeadLetters

    timeout = settings.backend_timeout_seconds
    store = FirestoreStore(settings.project_id, timeout=timeout)
    # A user's messages go to the instances the registry names for that user (SPEC section 1).
    directory = FirestoreDirectory(store.client, timeout=timeout)
    channel = PubSubChannel(
        settings.project_id, settings.notifications_topic, timeout=timeout, router=directory.instances_of
    )

    def registry(instance_id: str, limit: int, heartbeat_interval: float) -> ConnectionRegistry:
        return FirestoreRegistry(store.client, instance_id, limit, heartbeat_interval, timeout=timeout)

    tickets = FirestoreRedeemedTickets(store.client, timeout=timeout)
    killswitch = KillSwitch(
        FirestoreSwitchDocument(lambda: store.client, timeout=timeout), settings.killswitch_cache_seconds
    )
    dead_letters = PubSubDeadLetters(settings.project_id, settings.dead_letter_topic, timeout=timeout)
    return Backends(store, channel, dead_letters, registry, tickets, killswitch)


def memory_backends() -> Backends:
    """Embedded backends for one process (local runs without emulators, fast tests), routed like the real ones."""
    directory = MemoryDirectory()

    def registry(instance_id: str, limit: int, heartbeat_interval: float) -> ConnectionRegistry:
        return MemoryRegistry(instance_id, limit, heartbeat_interval, directory)

    return Backends(MemoryStore(), MemoryChannel(router=directory.instances_of), MemoryDeadLetters(), registry)


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
