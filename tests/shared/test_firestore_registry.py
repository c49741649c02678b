"""The Firestore connection registry under concurrency, on the emulator (no server)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from shared.backends.firestore_registry import FirestoreRegistry, connections_document
from shared.backends.group_call import GroupCall
from shared.config import Settings
from shared.errors import BackendUnavailable
from tests.support.waiting import wait_for

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


class _CountingRef:
    """A document reference that counts the reads made through it."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref
        self.reads = 0

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self._ref.get(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ref, name)


class _ObservedRegistry(FirestoreRegistry):
    """The production registry, with each user's document reference counting its reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refs: dict[str, _CountingRef] = {}

    def _connections_ref(self, user_id: str) -> Any:
        return self.refs.setdefault(user_id, _CountingRef(super()._connections_ref(user_id)))


def _document(client: Any, user: str) -> dict[str, Any]:
    return client.collection("connections").document(user).get().to_dict() or {}


@contextmanager
def _started(settings: Settings, limit: int) -> Iterator[tuple[Any, _ObservedRegistry]]:
    """A started registry of a new instance, stopped afterwards, and its client."""
    client = firestore.Client(project=settings.project_id)
    registry = _ObservedRegistry(client, f"instance-{uuid.uuid4().hex[:8]}", limit=limit, heartbeat_interval=30)
    try:
        registry.start(subscription="")
        yield client, registry
    finally:
        registry.stop()
        client.close()  # type: ignore[no-untyped-call]


def test_a_connect_under_the_limit_is_one_write_and_count_follows_live(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    user = new_user()
    with _started(settings, limit=3) as (client, registry):
        assert registry.acquire(user, "a") and registry.acquire(user, "b") and registry.acquire(user, "c")
        assert registry.refs[user].reads == 0  # the write's own result carried the count
        document = _document(client, user)
        assert document["count"] == 3 and set(document["live"]) == {"a", "b", "c"}
        assert document["instances"] == [registry.instance_id]

        assert registry.acquire(user, "d") is False  # over the limit: counted truly, then refused
        assert registry.refs[user].reads == 1
        document = _document(client, user)
        assert document["count"] == 3 and set(document["live"]) == {"a", "b", "c"}

        registry.release(user, "b")
        document = _document(client, user)
        assert document["count"] == 2 and set(document["live"]) == {"a", "c"}


def test_a_count_that_overstates_is_recounted_by_the_connect_it_would_refuse(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    """A connect whose write failed ambiguously leaves ``count`` too high; it must never cost a stream."""
    user = new_user()
    with _started(settings, limit=2) as (client, registry):
        ref = client.collection("connections").document(user)
        now = datetime.now(UTC)
        ref.set({**connections_document({"other": {"instance": "elsewhere", "opened_at": now}}, now), "count": 7})
        client.collection("stream_instances").document("elsewhere").set(
            {"heartbeat_at": now, "started_at": now, "subscription": "", "expire_at": now + timedelta(days=1)}
        )
        assert registry.acquire(user, "mine") is True
        document = _document(client, user)
        assert document["count"] == 2 and set(document["live"]) == {"other", "mine"}
        assert registry.acquire(user, "third") is False
        assert _document(client, user)["count"] == 2


def _gate(group: GroupCall[Any, Any]) -> tuple[threading.Event, threading.Event, list[int]]:
    """Hold ``group``'s first call until the second event is set; the first says it began, the list holds sizes."""
    call = group._call
    first_in = threading.Event()
    go_on = threading.Event()
    groups: list[int] = []

    def gated(items: list[Any]) -> Any:
        groups.append(len(items))
        if len(groups) == 1:
            first_in.set()
            assert go_on.wait(30)
        return call(items)

    group._call = gated
    return first_in, go_on, groups


def test_releases_of_different_users_that_wait_share_one_read(settings: Settings, new_user: Callable[[], str]) -> None:
    users = [new_user() for _ in range(6)]
    with _started(settings, limit=3) as (client, registry):
        for user in users:
            assert registry.acquire(user, f"a-{user}") and registry.acquire(user, f"b-{user}")
        first_in, go_on, groups = _gate(registry._release_reads)
        # users[1]'s second stream ends too: its read waits for a later call than its first's.
        releases = [(users[0], f"a-{users[0]}")] + [(u, f"a-{u}") for u in users[1:]] + [(users[1], f"b-{users[1]}")]
        with ThreadPoolExecutor(len(releases)) as pool:
            done = [pool.submit(registry.release, *releases[0])]
            assert first_in.wait(30)
            done += [pool.submit(registry.release, *release) for release in releases[1:]]
            reads = registry._release_reads
            wait_for(lambda: len(reads._pending) == len(releases) - 1, what="every other release waiting")
            go_on.set()
            for future in done:
                future.result(60)
        assert groups[:2] == [1, 5], f"the five other users were read in one call: {groups}"
        assert _document(client, users[1]) == {}, "both of users[1]'s streams released: its record is deleted"
        for user in users[:1] + users[2:]:
            document = _document(client, user)
            assert document["count"] == 1 and list(document["live"]) == [f"b-{user}"], (user, document)


def test_connects_of_different_users_that_wait_share_one_commit(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    users = [new_user() for _ in range(6)]
    with _started(settings, limit=1) as (client, registry):
        first_in, release, groups = _gate(registry._connects)
        # Two streams of users[1]: with a limit of 1 the second is refused, and it waits for a later commit.
        attempts = [(users[0], "first")] + [(u, f"c-{u}") for u in users[1:]] + [(users[1], "again")]
        with ThreadPoolExecutor(len(attempts)) as pool:
            results = [pool.submit(registry.acquire, *attempts[0])]
            assert first_in.wait(30)
            results += [pool.submit(registry.acquire, *attempt) for attempt in attempts[1:]]
            wait_for(lambda: len(registry._connects._pending) == len(attempts) - 1, what="every other connect waiting")
            release.set()
            accepted = [future.result(60) for future in results]
        assert accepted == [True] * 6 + [False]
        assert groups[:2] == [1, 5], f"the five other users went out in one commit: {groups}"
        for user in users:
            document = _document(client, user)
            assert document["count"] == 1 and len(document["live"]) == 1, (user, document)
