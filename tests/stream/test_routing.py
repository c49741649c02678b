"""Channel routing on the real path (SPEC section 1): the Pub/Sub emulator, the Firestore registry, real processes.

Each stream process counts every channel message it receives
(``sse_channel_messages_total`` on its /metrics); routing is judged by that
count, per process, not by what the streams show (the hub would hide a
misrouted message by dropping it).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_registry import FirestoreDirectory
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryDeadLetters
from shared.backends.pubsub_channel import PubSubChannel, instance_topic_id
from shared.channel import ChannelMessage
from shared.config import Settings, load_settings
from shared.errors import BackendUnavailable
from shared.feed import Applied
from shared.notification import NewNotification
from tests.support.emulators import EmulatorPair
from tests.support.events import valid_event
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"


def _received(server: ManagedProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(r"^sse_channel_messages_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, "sse_channel_messages_total missing from /metrics"
    return float(match.group(1))


def _instance_id(server: ManagedProcess) -> str:
    return str(httpx.get(f"{server.url}/api/v1/notifications/health", timeout=10).json()["instance_id"])


@pytest.fixture(scope="module")
def pair(emulators_session: EmulatorPair, settings: Settings) -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    first, second = start_stream_service(emulators_session.env()), start_stream_service(emulators_session.env())
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture(scope="module")
def quick(settings: Settings) -> Settings:
    return load_settings({"GOOGLE_CLOUD_PROJECT": settings.project_id, "BACKEND_TIMEOUT_SECONDS": "5"})


class _SignallingStore(FirestoreStore):
    """Says when a change has committed, so a test can order other steps after it."""

    def __init__(self, project_id: str, persisted: threading.Event) -> None:
        super().__init__(project_id, timeout=5)
        self._persisted = persisted

    def apply(self, new: NewNotification) -> Applied:
        result = super().apply(new)
        self._persisted.set()
        return result


def _backends(
    settings: Settings,
    route: Callable[[Collection[str]], Mapping[str, Collection[str]]] | None,
    persisted: threading.Event | None = None,
) -> Backends:
    store = (
        FirestoreStore(settings.project_id, timeout=5)
        if persisted is None
        else _SignallingStore(settings.project_id, persisted)
    )
    router = route or FirestoreDirectory(store.client, timeout=5).instances_of
    channel = PubSubChannel(settings.project_id, settings.notifications_topic, timeout=5, router=router)
    return Backends(store, channel, MemoryDeadLetters())


def _ingest(backends: Backends, settings: Settings, user: str, title: str) -> None:
    event = valid_event(user, title=title)
    message = PubsubMessage(json.dumps(event).encode(), {}, f"m-{uuid.uuid4().hex}", datetime.now(UTC))
    assert ingest(message, backends, settings) is Outcome.STORED


def _titles(stream: EventStream) -> list[str]:
    return [e.json()["title"] for e in stream.of_type("notification")]


@contextmanager
def _streams(*where: tuple[ManagedProcess, str]) -> Iterator[list[EventStream]]:
    """One open stream per (server, user), each past its ``connection.established``."""
    streams = [EventStream(server.url + STREAM, token=token_for(user)) for server, user in where]
    try:
        for stream in streams:
            stream.wait_event("connection.established")
        yield streams
    finally:
        for stream in streams:
            stream.close()


def test_each_process_receives_only_its_users_messages(
    pair: tuple[ManagedProcess, ManagedProcess], quick: Settings
) -> None:
    first, second = pair
    alice, bob, carol = (f"route-{n}-{uuid.uuid4().hex[:6]}" for n in ("alice", "bob", "carol"))
    backends = _backends(quick, None)
    with _streams((first, alice), (second, bob)) as (on_first, on_second):
        before = (_received(first), _received(second))
        for n in range(3):
            _ingest(backends, quick, alice, f"alice {n}")
        for n in range(2):
            _ingest(backends, quick, bob, f"bob {n}")
        for n in range(4):
            _ingest(backends, quick, carol, f"carol {n}")  # no stream anywhere: no channel message at all
        wait_for(lambda: len(_titles(on_first)) >= 3 and len(_titles(on_second)) >= 2, 20, what="every notification")
        # Delivered messages are counted before they reach a stream: the counts are final now.
        assert (_received(first) - before[0], _received(second) - before[1]) == (3, 2)
        assert sorted(_titles(on_first)) == ["alice 0", "alice 1", "alice 2"]
        assert sorted(_titles(on_second)) == ["bob 0", "bob 1"]
    backends.close()


def test_a_user_on_two_instances_gets_each_message_on_both(
    pair: tuple[ManagedProcess, ManagedProcess], quick: Settings
) -> None:
    first, second = pair
    user = f"route-both-{uuid.uuid4().hex[:6]}"
    backends = _backends(quick, None)
    with _streams((first, user), (second, user)) as (on_first, on_second):
        _ingest(backends, quick, user, "everywhere")
        for stream in (on_first, on_second):
            stream.wait_for(lambda e: e.event == "notification" and e.json()["title"] == "everywhere", 20)
    backends.close()


def test_broadcasts_and_the_fallback_reach_every_instance(
    pair: tuple[ManagedProcess, ManagedProcess], quick: Settings
) -> None:
    first, second = pair
    alice, bob = (f"route-fb-{n}-{uuid.uuid4().hex[:6]}" for n in ("alice", "bob"))

    def unreadable(users: Collection[str]) -> Mapping[str, Collection[str]]:
        raise BackendUnavailable("registry down (test)")

    backends = _backends(quick, unreadable)
    with _streams((first, alice), (second, bob)) as (on_first, on_second):
        before = (_received(first), _received(second))
        # The registry cannot be read: every instance gets the message, the right stream shows it.
        _ingest(backends, quick, alice, "fallback")
        on_first.wait_for(lambda e: e.event == "notification" and e.json()["title"] == "fallback", 20)
        wait_for(lambda: _received(second) - before[1] == 1, 20, what="the fallback at the other instance")
        assert "fallback" not in _titles(on_second)
        # A broadcast reaches every instance and every stream on it.
        broadcast = {"id": f"{uuid.uuid4().int % 16**24:024x}", "title": "maintenance tonight", "user_id": ""}
        backends.channel.publish(ChannelMessage("", "notification", broadcast, broadcast=True))
        for stream in (on_first, on_second):
            stream.wait_for(lambda e: e.event == "notification" and e.json()["title"] == "maintenance tonight", 20)
        assert (_received(first) - before[0], _received(second) - before[1]) == (2, 2)
    backends.close()


def test_no_loss_whichever_side_of_a_connect_the_registry_read_falls(
    pair: tuple[ManagedProcess, ManagedProcess], quick: Settings
) -> None:
    """Two ingest processes (threads with their own clients), held between their steps.

    The client reads its history (and the feed's ``stream_cursor``) first, as
    clients do, then the two commit: ``early`` reads the registry before the
    stream registers (so it routes nowhere) and publishes after; ``late`` reads
    the registry after the stream registered (so it routes to it). The stream,
    opened with the cursor as Last-Event-ID, gets both, each once: ``early``
    through the replay, ``late`` live or in the replay, whichever comes first.
    """
    first, _ = pair
    user = f"route-seam-{uuid.uuid4().hex[:6]}"
    token = token_for(user)
    history = httpx.get(f"{first.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    cursor = history.json()["stream_cursor"]
    connected = threading.Event()
    early_routed = threading.Event()
    directory = FirestoreDirectory(FirestoreStore(quick.project_id, timeout=5).client, timeout=5)
    seen_by: dict[str, Mapping[str, Collection[str]]] = {}

    def early_route(users: Collection[str]) -> Mapping[str, Collection[str]]:
        seen_by["early"] = directory.instances_of(users)
        early_routed.set()
        assert connected.wait(30)  # publish only once the stream is up: a message it must not rely on
        return seen_by["early"]

    def late_route(users: Collection[str]) -> Mapping[str, Collection[str]]:
        assert connected.wait(30)  # held between its commit and the registry read
        seen_by["late"] = directory.instances_of(users)
        return seen_by["late"]

    late_persisted = threading.Event()
    ingests = [_backends(quick, early_route), _backends(quick, late_route, late_persisted)]
    threads = [
        threading.Thread(target=_ingest, args=(ingests[0], quick, user, "early")),
        threading.Thread(target=_ingest, args=(ingests[1], quick, user, "late")),
    ]
    for thread in threads:
        thread.start()
    assert early_routed.wait(30) and late_persisted.wait(30)
    stream = EventStream(first.url + STREAM, token=token, last_event_id=cursor)
    try:
        stream.wait_event("connection.established")
        connected.set()
        for thread in threads:
            thread.join(30)
        wait_for(lambda: {"early", "late"} <= set(_titles(stream)), 20, what="both notifications on the stream")
        assert user not in seen_by["early"]  # the interleaving really happened
        assert _instance_id(first) in seen_by["late"][user]
        assert sorted(_titles(stream)) == ["early", "late"]  # each once
    finally:
        stream.close()
        for backends in ingests:
            backends.close()


def test_an_instance_deletes_its_inbox_at_shutdown(emulators_session: EmulatorPair, settings: Settings) -> None:
    server = start_stream_service(emulators_session.env())
    instance = _instance_id(server)
    publisher = pubsub_v1.PublisherClient()

    def topics() -> set[str]:
        return {t.name.rsplit("/", 1)[-1] for t in publisher.list_topics(project=f"projects/{settings.project_id}")}

    try:
        assert instance_topic_id(instance) in topics()
    finally:
        server.stop()
    assert instance_topic_id(instance) not in topics()
    publisher.stop()
