"""Firestore unavailable during ingest: the function raises, and the same event succeeds once it is back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools import emulators as emulator_tools
from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryDeadLetters
from shared.backends.pubsub_channel import PubSubChannel
from shared.config import Settings, load_settings
from shared.errors import BackendUnavailable
from tests.support.emulators import PROJECT
from tests.support.events import valid_event
from tests.support.pubsub import PullSubscription
from tests.support.waiting import wait_for


@pytest.fixture
def own_store(
    private_firestore: emulator_tools.Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[emulator_tools.Emulator, FirestoreStore]]:
    """A store on a Firestore emulator of this test's own, so stopping it disturbs no other test."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private_firestore.address)
    store = FirestoreStore(PROJECT, timeout=2.0)
    _ = store.client  # bind the client to this emulator while the variable points at it
    monkeypatch.undo()
    yield private_firestore, store
    store.close()


def test_firestore_down_raises_then_the_same_event_is_stored_once(
    own_store: tuple[emulator_tools.Emulator, FirestoreStore],
    settings: Settings,
    broadcast_tap: PullSubscription,
    user_id: str,
) -> None:
    emulator, store = own_store
    quick = load_settings({"GOOGLE_CLOUD_PROJECT": PROJECT, "BACKEND_TIMEOUT_SECONDS": "2"})
    dead_letters = MemoryDeadLetters()
    backends = Backends(store, PubSubChannel(PROJECT, settings.notifications_topic, timeout=5), dead_letters)
    message = PubsubMessage(json.dumps(valid_event(user_id)).encode(), {}, "m-1", datetime.now(UTC))

    emulator.stop()
    with pytest.raises(BackendUnavailable):
        ingest(message, backends, quick)
    assert dead_letters.messages == [], "a transient failure must not dead-letter a young event"

    emulator.start()

    def redeliver() -> Outcome | None:
        try:
            return ingest(message, backends, quick)
        except BackendUnavailable:
            return None  # Pub/Sub would redeliver again

    # STORED, or DUPLICATE when an attempt's commit landed after the client gave up on
    # it (a busy machine, a restarting emulator): either way the product stored it once.
    outcome = wait_for(redeliver, timeout=60, interval=0.5, what="ingest to succeed after Firestore is back")
    assert outcome in (Outcome.STORED, Outcome.DUPLICATE)
    assert ingest(message, backends, quick) is Outcome.DUPLICATE
    assert len(store.page(user_id, 10).notifications) == 1
    # This channel has no router, so it publishes to every instance.
    published = broadcast_tap.pull(1, timeout=10) + broadcast_tap.drain(settle=1.0)
    assert {m.channel_message().data["id"] for m in published} == {store.page(user_id, 10).notifications[0].id}
    assert dead_letters.messages == []
    backends.channel.close()
