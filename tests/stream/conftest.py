"""Stream-service fixtures: the service as a real process on the emulators, and a publisher of content events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.cli import publish_event
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import valid_event
from tests.support.processes import ManagedProcess
from tests.support.pubsub import PullSubscription
from tests.support.stream import start_stream_service


@pytest.fixture(scope="package")
def stream_server(emulators_session: EmulatorPair, settings: Settings) -> Iterator[ManagedProcess]:
    server = start_stream_service(emulators_session.env())
    yield server
    server.stop()


@pytest.fixture(scope="package")
def memory_service() -> Iterator[ManagedProcess]:
    """The service on the memory backends, for the modules whose tests only send it requests (fuzz, bad input,
    the head bound): one process for them all instead of one each."""
    server = start_stream_service({"NOTIFICATIONS_BACKEND": "memory"})
    yield server
    server.stop()


@pytest.fixture
def publish(settings: Settings, push_subscription: PullSubscription) -> Callable[..., str]:
    """Publish a content event for ``user`` to CONTENT_EVENTS_TOPIC (the ingest function stores it)."""

    def send(user: str, **overrides: Any) -> str:
        return publish_event(settings.project_id, settings.content_events_topic, valid_event(user, **overrides))

    return send
