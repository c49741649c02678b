"""Fixtures on the emulators: settings, topics, the ingest function behind a push subscription.

Registered once for the whole suite (``pytest_plugins`` in tests/conftest.py), so every
folder shares one ingest server and one push subscription: a second subscription on the
content topic would deliver every event twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from functions.stream.config import StreamSettings, load_stream_settings
from shared.backends.pubsub_channel import ensure_topics
from tests.conftest import EmulatorPair
from tests.support.processes import ServerProcess, start_function
from tests.support.pubsub import InstanceTap, PullSubscription


@pytest.fixture(scope="session")
def settings(emulators_session: EmulatorPair) -> StreamSettings:
    settings = load_stream_settings()
    ensure_topics(
        settings.project_id,
        [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic],
    )
    return settings


@pytest.fixture(scope="session")
def ingest_server(emulators_session: EmulatorPair, settings: StreamSettings) -> Iterator[ServerProcess]:
    server = start_function(
        "functions/ingest/main.py", "ingest_content_event", {**emulators_session.env(), "BACKEND_TIMEOUT_SECONDS": "5"}
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def push_subscription(settings: StreamSettings, ingest_server: ServerProcess) -> Iterator[PullSubscription]:
    """The trigger: content topic -> push -> functions-framework, as Eventarc wires it in the cloud."""
    endpoint = f"{ingest_server.url}/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    subscription = PullSubscription(settings.project_id, settings.content_events_topic, push_endpoint=endpoint)
    yield subscription
    subscription.delete()


@pytest.fixture
def channel_tap(settings: StreamSettings, user_id: str) -> Iterator[PullSubscription]:
    """Everything routed on the live channel from now on to a stream instance holding ``user_id``'s stream."""
    subscription = InstanceTap(settings.project_id, [user_id])
    yield subscription
    subscription.delete()


@pytest.fixture
def broadcast_tap(settings: StreamSettings) -> Iterator[PullSubscription]:
    """Everything published to every stream instance (broadcasts, and the fallback when routing cannot)."""
    subscription = PullSubscription(settings.project_id, settings.notifications_topic)
    yield subscription
    subscription.delete()


@pytest.fixture
def dead_letter_tap(settings: StreamSettings) -> Iterator[PullSubscription]:
    subscription = PullSubscription(settings.project_id, settings.dead_letter_topic)
    yield subscription
    subscription.delete()


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"
