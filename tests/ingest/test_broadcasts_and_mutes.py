"""Broadcasts stored once and seen per user, and muted types, on the Firestore emulator (SPEC sections 9, 10).

Broadcasts are global, so these tests use a Firestore project of their own on the
emulator: a broadcast here never shows up in another test's users' feeds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from google.cloud import firestore

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import BROADCASTS, FirestoreStore
from shared.backends.memory import MemoryChannel, MemoryDeadLetters
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import valid_event

PROJECT = "broadcast-tests"


@pytest.fixture
def backends(emulators: EmulatorPair) -> Iterator[Backends]:
    store = FirestoreStore(PROJECT, timeout=10)
    yield Backends(store, MemoryChannel(), MemoryDeadLetters())
    client = firestore.Client(project=PROJECT)
    for snapshot in client.collection(BROADCASTS).stream():
        snapshot.reference.delete()
    client.close()  # type: ignore[no-untyped-call]
    store.close()


def _delivery(event: dict[str, object], attributes: dict[str, str] | None = None) -> PubsubMessage:
    return PubsubMessage(json.dumps(event).encode(), attributes or {}, uuid.uuid4().hex, datetime.now(UTC))


def test_a_broadcast_is_stored_once_seen_by_three_users_and_read_by_one(backends: Backends, settings: Settings) -> None:
    users = [f"user-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    event = valid_event("x", event_type="system.maintenance", title="Maintenance tonight", audience="all")
    del event["user_id"]
    delivery = _delivery(event)
    assert ingest(delivery, backends, settings) is Outcome.STORED
    assert ingest(delivery, backends, settings) is Outcome.DUPLICATE
    client = firestore.Client(project=PROJECT)
    [stored] = list(client.collection(BROADCASTS).stream())
    client.close()  # type: ignore[no-untyped-call]
    published = backends.channel.published  # type: ignore[attr-defined]
    assert [m.broadcast for m in published] == [True, True] and {m.seq for m in published} == {1}

    store = backends.store
    for user in users:
        [seen] = store.page(user, 10).notifications
        assert seen.id == stored.id and seen.user_id == user and seen.read is False
        assert store.unread_count(user) == 1
    [change] = store.set_read(users[0], [stored.id], True)
    assert change.data == {"ids": [stored.id], "read": True} and change.seq == 1
    assert store.unread_count(users[0]) == 0 and store.page(users[0], 10).notifications[0].read is True
    assert [store.unread_count(u) for u in users[1:]] == [1, 1]
    assert store.delete(users[1], stored.id) is not None
    assert store.page(users[1], 10).notifications == [] and store.unread_count(users[1]) == 0
    assert len(store.page(users[2], 10).notifications) == 1
    # Replay shows each user their own state of it.
    [for_reader] = store.broadcast_changes(users[0], 0, 10)
    [for_deleter] = store.broadcast_changes(users[1], 0, 10)
    assert for_reader.data["read"] is True and for_deleter.type == "notification.deleted"


def test_a_muted_type_is_stored_not_published_and_not_counted(backends: Backends, settings: Settings) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    backends.store.set_muted(user, frozenset({"content_generation.progress"}))
    assert backends.store.muted(user) == {"content_generation.progress"}
    progress = valid_event(user, event_type="content_generation.progress", progress_percentage=10)
    assert ingest(_delivery(progress), backends, settings) is Outcome.STORED
    assert backends.channel.published == []  # type: ignore[attr-defined]
    assert backends.store.unread_count(user) == 0
    assert len(backends.store.page(user, 10).notifications) == 1  # still listed in the history
    assert ingest(_delivery(valid_event(user)), backends, settings) is Outcome.STORED
    assert [m.seq for m in backends.channel.published] == [2]  # type: ignore[attr-defined]
    assert backends.store.unread_count(user) == 1
