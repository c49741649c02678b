"""Firestore down during ingest, on the full push path (test_ingest_faults.py calls ingest in process).

A private Firestore emulator (stopped and restarted), a project of this test's
own on the session Pub/Sub, the ingest function under functions-framework behind
a push subscription. Events published while Firestore is down make the function
fail (HTTP 500), Pub/Sub redelivers them, and once Firestore is back each one is
stored exactly once and announced on the channel; nothing is dead-lettered.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from devtools import emulators as emulator_tools
from devtools.cli import publish_event
from shared.backends.firestore_store import FirestoreStore
from shared.backends.pubsub_channel import ensure_topics
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import new_user, valid_event
from tests.support.processes import start_function
from tests.support.pubsub import PullSubscription
from tests.support.waiting import wait_for

EVENTS = 6


def test_events_pushed_while_firestore_is_down_are_stored_once_after_recovery(
    emulators_session: EmulatorPair,
    settings: Settings,
    private_firestore: emulator_tools.Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = f"fsdown-{uuid.uuid4().hex[:10]}"
    ensure_topics(project, [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic])
    env = {
        **emulators_session.env(),
        **private_firestore.env(),
        "GOOGLE_CLOUD_PROJECT": project,
        "BACKEND_TIMEOUT_SECONDS": "2",
    }
    ingest = start_function("functions/ingest/main.py", "ingest_content_event", env)
    endpoint = f"{ingest.url}/projects/{project}/topics/{settings.content_events_topic}"
    push = PullSubscription(project, settings.content_events_topic, push_endpoint=endpoint)
    channel_tap = PullSubscription(project, settings.notifications_topic)
    dead_letter_tap = PullSubscription(project, settings.dead_letter_topic)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private_firestore.address)
    store = FirestoreStore(project, timeout=5)
    _ = store.client  # bound to the private emulator
    monkeypatch.undo()
    user = new_user()
    try:
        private_firestore.stop()
        events = [valid_event(user, title=f"during-{n}") for n in range(EVENTS)]
        for event in events:
            publish_event(project, settings.content_events_topic, event)
        wait_for(
            lambda: ingest.log().count("Pub/Sub will redeliver") >= EVENTS,
            60,
            what="every delivery to fail while Firestore is down",
        )
        assert dead_letter_tap.drain(settle=0.5) == [], "a transient failure must not dead-letter"

        private_firestore.start()  # same address; the ingest process reconnects by itself

        def titles() -> list[str]:
            try:
                return [n.title for n in store.page(user, 100).notifications]
            except Exception:  # the store client may still be reconnecting
                return []

        wait_for(lambda: len(titles()) >= EVENTS, 90, interval=0.5, what="every event stored after recovery")
        # Pub/Sub may still redeliver some (a delivery that timed out while it was being stored).
        published = channel_tap.drain(settle=2.0)
        assert Counter(titles()) == Counter(e["title"] for e in events), "each stored exactly once"
        # The user has no open stream (the restarted emulator kept no registry either), so
        # routing sends nothing, not even to every instance: the registry was readable.
        # Announcement to a user's stream: tests/stream/test_routing.py.
        assert published == [], "no channel message for a user without a stream"
        assert dead_letter_tap.drain(settle=0.5) == [], "nothing dead-lettered"
        assert "dead-lettered" not in ingest.log()
    finally:
        push.delete()
        channel_tap.delete()
        dead_letter_tap.delete()
        ingest.stop()
        store.close()
