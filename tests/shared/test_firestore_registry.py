"""The Firestore connection registry under concurrency, on the emulator (no server)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from google.cloud import firestore

from shared.backends.firestore_registry import FirestoreRegistry
from shared.config import Settings
from shared.errors import BackendUnavailable

CONNECT_DEADLINE = 60.0


def test_concurrent_connects_never_exceed_the_limit(settings: Settings, new_user: Callable[[], str]) -> None:
    client = firestore.Client(project=settings.project_id)
    instances = [
        FirestoreRegistry(client, f"instance-{uuid.uuid4().hex[:8]}", limit=3, heartbeat_interval=30) for _ in range(2)
    ]
    user = new_user()
    try:
        for registry in instances:
            registry.start(subscription="")
        attempts = [(instances[i % 2], f"c{i}") for i in range(6)]  # two instances racing for one user

        def connect(attempt: tuple[FirestoreRegistry, str]) -> bool:
            # A contended transaction may give up (the service answers 503); a client
            # retries after a jittered backoff, as the browser client does. Five
            # immediate retries were not enough on a busy machine (the six threads kept
            # colliding); a deadline with backoff lets the contention drain.
            deadline = time.monotonic() + CONNECT_DEADLINE
            delay = 0.05
            while True:
                try:
                    return attempt[0].acquire(user, attempt[1])
                except BackendUnavailable:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"connect kept failing for {CONNECT_DEADLINE} s") from None
                    time.sleep(delay * (1 + random.random()))  # backoff between attempts, not synchronisation
                    delay = min(delay * 2, 1.0)

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(connect, attempts))
        assert results.count(True) == 3
        live = (client.collection("connections").document(user).get().to_dict() or {})["live"]
        accepted = {connection for (_, connection), ok in zip(attempts, results, strict=True) if ok}
        assert set(live) == accepted

        for registry, connection in attempts:
            if connection in accepted:
                registry.release(user, connection)
        assert not client.collection("connections").document(user).get().exists
    finally:
        for registry in instances:
            registry.stop()
        client.close()  # type: ignore[no-untyped-call]
