"""Poison events on the real push path: each ends in one dead letter, never in redeliveries.

The ingest function runs under functions-framework behind a push subscription
on the Pub/Sub emulator, as in the cloud. Each event below was once redelivered
about once a second, forever: a message of nearly 10 MB whose dead-letter copy
was over Pub/Sub's limit (MessageTooLargeError on the dead-letter publish), and
the events of the malformed table that raised OverflowError or ValueError
(tests/emulator/test_ingest_path.py publishes the whole table). A message with
100 attributes gets a dead letter of at most 100.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.cli import publish_event
from shared.backends.pubsub_dead_letters import MAX_ATTRIBUTES, MAX_REQUEST_BYTES, TRIMMED, request_bytes
from shared.config import Settings
from tests.support.events import valid_event
from tests.support.pubsub import PullSubscription, Received


@pytest.fixture
def dead_letters(settings: Settings) -> Iterator[PullSubscription]:
    subscription = PullSubscription(settings.project_id, settings.dead_letter_topic, large_messages=True)
    yield subscription
    subscription.delete()


def _only(received: list[Received], case: str) -> list[Received]:
    return [m for m in received if m.attributes.get("case") == case]


def test_a_nearly_10_mb_event_is_dead_lettered_once_trimmed(
    settings: Settings, push_subscription: PullSubscription, dead_letters: PullSubscription
) -> None:
    case = uuid.uuid4().hex
    topic = f"projects/{settings.project_id}/topics/{settings.content_events_topic}"
    # A worker that put a whole transcript in ``message``: as large as one publish may be.
    event = valid_event("poison-user", message="")
    room = MAX_REQUEST_BYTES - request_bytes(topic, json.dumps(event).encode(), {"case": case}) - 64
    data = json.dumps({**event, "message": "m" * room}).encode()
    publish_event(settings.project_id, settings.content_events_topic, data, timeout=60, case=case)

    [letter] = _only(dead_letters.pull(1, timeout=90), case)
    assert "message must be 0-2000 characters" in letter.attributes["error"]
    assert data.startswith(letter.data) and len(letter.data) > len(data) - 4096
    assert f"of {len(data)} bytes" in letter.attributes[TRIMMED]
    # Acknowledged at the first delivery: no second dead letter follows.
    assert _only(dead_letters.drain(settle=5.0), case) == []


def test_an_event_with_100_attributes_gets_a_dead_letter_of_at_most_100(
    settings: Settings, push_subscription: PullSubscription, dead_letters: PullSubscription
) -> None:
    case = uuid.uuid4().hex
    attributes: dict[str, Any] = {"case": case, **{f"x-{i:03d}": str(i) for i in range(MAX_ATTRIBUTES - 1)}}
    publish_event(settings.project_id, settings.content_events_topic, b'{"title": 1}', **attributes)
    [letter] = _only(dead_letters.pull(1, timeout=60), case)
    assert len(letter.attributes) <= MAX_ATTRIBUTES
    assert "event_type is required" in letter.attributes["error"] and letter.attributes["original_message_id"]
    assert "dropped" in letter.attributes[TRIMMED]
    assert _only(dead_letters.drain(settle=3.0), case) == []
