"""Ingest against topics that do not exist (a deployment mistake), on the Pub/Sub emulator.

A missing topic answers NotFound, which was treated as an outage: 503s and
redeliveries until the maximum age. Now it is BackendMisconfigured: logged at
ERROR with ``error_kind`` ``backend_misconfigured`` naming the topic, and the
event is dead-lettered at once with that reason (it can be replayed once the
topic exists); if the dead-letter topic is missing too, the function raises
while the event is young and keeps it in the log once it is too old.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.google_errors import MISCONFIGURED_KIND
from shared.backends.memory import MemoryStore
from shared.backends.pubsub_channel import PubSubChannel
from shared.backends.pubsub_dead_letters import PubSubDeadLetters
from shared.config import Settings
from shared.errors import BackendMisconfigured
from tests.support.events import valid_event
from tests.support.pubsub import PullSubscription


@pytest.fixture
def missing_topic() -> str:
    return f"never-created-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def channel_to_nowhere(settings: Settings, missing_topic: str) -> Iterator[PubSubChannel]:
    channel = PubSubChannel(settings.project_id, missing_topic, timeout=5)
    yield channel
    channel.close()


def _message(age: float) -> PubsubMessage:
    data = json.dumps(valid_event(f"user-{uuid.uuid4().hex[:8]}")).encode()
    return PubsubMessage(data, {}, f"m-{uuid.uuid4().hex[:8]}", datetime.now(UTC) - timedelta(seconds=age))


def test_a_missing_channel_topic_dead_letters_at_once_with_the_reason(
    settings: Settings,
    channel_to_nowhere: PubSubChannel,
    missing_topic: str,
    dead_letter_tap: PullSubscription,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead_letters = PubSubDeadLetters(settings.project_id, settings.dead_letter_topic, timeout=10)
    backends = Backends(MemoryStore(), channel_to_nowhere, dead_letters)
    message = _message(age=1)
    assert ingest(message, backends, settings) is Outcome.DEAD_LETTERED
    received = dead_letter_tap.pull(1, timeout=30)
    [letter] = [m for m in received if m.attributes["original_message_id"] == message.message_id]
    assert letter.attributes["error"].startswith("backend misconfigured: ")
    assert missing_topic in letter.attributes["error"]
    [logged] = [r for r in caplog.records if r.__dict__.get("error_kind") == MISCONFIGURED_KIND]
    assert logged.levelname == "ERROR" and missing_topic in logged.getMessage()
    dead_letters.close()


def test_with_the_dead_letter_topic_missing_too_it_raises_while_young_and_logs_when_old(
    settings: Settings, channel_to_nowhere: PubSubChannel, missing_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead_letters = PubSubDeadLetters(settings.project_id, missing_topic + "-dead-letter", timeout=10)
    backends = Backends(MemoryStore(), channel_to_nowhere, dead_letters)
    with pytest.raises(BackendMisconfigured):
        ingest(_message(age=1), backends, settings)
    old = _message(age=settings.event_max_age_seconds + 60)
    assert ingest(old, backends, settings) is Outcome.ABANDONED
    [abandoned] = [r for r in caplog.records if r.getMessage() == "content event abandoned"]
    assert abandoned.__dict__["message_id"] == old.message_id and "misconfigured" in abandoned.__dict__["reason"]
    dead_letters.close()
