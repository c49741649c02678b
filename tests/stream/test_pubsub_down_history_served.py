"""Pub/Sub unreachable while Firestore works: the history API keeps answering, streams keep beating and catch up.

Private emulators of this test's own (Pub/Sub is stopped, Firestore is not
shared with the suite either), the stream service as a real process. While
Pub/Sub is down:

- the history API answers 200 to lists, mark-read, mark-unread and deletes:
  they need Firestore only (the announcement on the channel fails and is logged);
- open streams stay open and get their heartbeats;
- health says ``degraded`` (200), not ``unavailable``;
- an event is stored by the ingest logic, whose channel publish fails (it raises
  for a redelivery: the notification is in Firestore but was never announced).

When Pub/Sub is back (its topics recreated: the emulator forgets them), the
instance re-creates its subscription, reports the gap, and every open stream
replays what it missed from Firestore: the notification stored during the
outage arrives on each stream exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from devtools import emulators as emulator_tools
from functions.ingest.ingest import PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryDeadLetters
from shared.backends.pubsub_channel import PubSubChannel, ensure_topics
from shared.config import Settings, load_settings
from shared.errors import BackendUnavailable
from tests.support.emulators import PROJECT
from tests.support.events import new_user, valid_event
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for

PREFIX = "/api/v1/notifications"
TOPICS = ["content-generation-events", "content-generation-events-dead-letter", "user-notifications"]


@pytest.fixture
def backends_of(
    private_pubsub: emulator_tools.Emulator,
    private_firestore: emulator_tools.Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backends]:
    """What the ingest function holds, bound to the private emulators."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private_pubsub.address)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private_firestore.address)
    ensure_topics(PROJECT, TOPICS)
    store = FirestoreStore(PROJECT, timeout=3)
    _ = store.client  # the clients read the hosts when built
    channel = PubSubChannel(PROJECT, "user-notifications", timeout=3)
    channel.publisher_client()
    backends = Backends(store, channel, MemoryDeadLetters())
    yield backends
    channel.close()
    store.close()


def _ingest(backends: Backends, settings: Settings, user: str, title: str) -> None:
    data = json.dumps(valid_event(user, title=title, event_id=f"evt-{uuid.uuid4().hex}")).encode()
    ingest(PubsubMessage(data, {}, f"m-{uuid.uuid4().hex}", datetime.now(UTC)), backends, settings)


def _history(server: ManagedProcess, token: str) -> list[dict[str, object]]:
    response = httpx.get(f"{server.url}{PREFIX}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    notifications: list[dict[str, object]] = response.json()["notifications"]
    return notifications


def test_history_is_served_and_streams_catch_up_while_pubsub_is_down(
    private_pubsub: emulator_tools.Emulator, private_firestore: emulator_tools.Emulator, backends_of: Backends
) -> None:
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": PROJECT, "BACKEND_TIMEOUT_SECONDS": "3"})
    env = {
        **private_pubsub.env(),
        **private_firestore.env(),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "BACKEND_TIMEOUT_SECONDS": "3",
    }
    server = start_stream_service(env)
    user = new_user("pubsub-down")
    token = token_for(user)
    auth = {"Authorization": f"Bearer {token}"}
    streams: list[EventStream] = []
    try:
        for title in ("before-1", "before-2", "before-3"):
            _ingest(backends_of, settings, user, title)
        for _ in range(2):  # two tabs
            stream = EventStream(f"{server.url}{PREFIX}/stream", token=token)
            assert stream.status == 200
            stream.wait_event("connection.established")
            streams.append(stream)
        before = {str(n["title"]): str(n["id"]) for n in _history(server, token)}
        assert set(before) == {"before-1", "before-2", "before-3"}

        private_pubsub.stop()
        beats = [len(s.of_type("heartbeat")) for s in streams]

        with pytest.raises(BackendUnavailable):  # stored, not announced: Pub/Sub would redeliver it
            _ingest(backends_of, settings, user, "during")
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
            listed = {str(n["title"]) for n in _history(server, token)}
            assert listed == {"before-1", "before-2", "before-3", "during"}, "the history is served"
            read = client.post(f"{PREFIX}/mark-read", json={"notification_ids": [before["before-1"]]})
            assert (read.status_code, read.json()) == (200, {"updated": 1})
            unread = client.post(f"{PREFIX}/mark-unread", json={"notification_ids": [before["before-1"]]})
            assert (unread.status_code, unread.json()) == (200, {"updated": 1})
            assert client.delete(f"{PREFIX}/{before['before-2']}").status_code == 204
            unread_only = client.get(PREFIX, params={"unread_only": "true"}).json()
            assert {n["title"] for n in unread_only["notifications"]} == {"before-1", "before-3", "during"}
            health = client.get(f"{PREFIX}/health")
            assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
        wait_for(
            lambda: all(len(s.of_type("heartbeat")) >= b + 2 for s, b in zip(streams, beats, strict=True)),
            20,
            what="two heartbeats on every stream while Pub/Sub is down",
        )
        assert not any(s.ended.is_set() for s in streams)
        assert all("during" not in [e.json()["title"] for e in s.of_type("notification")] for s in streams)

        private_pubsub.start()
        ensure_topics(PROJECT, TOPICS)  # the restarted emulator has none; the real service keeps them

        for stream in streams:
            stream.wait_for(lambda e: e.event == "notification" and e.json()["title"] == "during", timeout=60)
            stream.wait_event("heartbeat", timeout=10)  # a duplicate would have come by now
            stream.wait_event("heartbeat", timeout=10)
            titles = [e.json()["title"] for e in stream.of_type("notification")]
            assert titles.count("during") == 1, titles
        # Both pulls of the instance (its inbox, the broadcasts) come back, each on its own backoff;
        # health is cached for 5 s.
        wait_for(
            lambda: httpx.get(f"{server.url}{PREFIX}/health", timeout=10).json()["checks"]["subscription"] == "ok",
            30,
            what="the channel subscription healthy again",
        )
    finally:
        for stream in streams:
            stream.close()
        server.stop()
