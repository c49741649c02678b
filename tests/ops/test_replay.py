"""Replaying dead letters: the runbook's tool against the Pub/Sub emulator."""

from __future__ import annotations

import json
import uuid

from google.cloud import pubsub_v1

from ops.replay_dead_letters import main, replay, replay_body
from shared.backends.pubsub_channel import ensure_topics
from tests.support.emulators import EmulatorPair
from tests.support.pubsub import PullSubscription


def test_replay_body_keys_an_id_less_event_by_its_original_message_id() -> None:
    body = json.loads(replay_body(b'{"user_id": "u1", "title": "t"}', {"original_message_id": "m-1"}))
    assert body == {"user_id": "u1", "title": "t", "event_id": "m-1"}
    assert replay_body(b'{"event_id": "e-9"}', {"original_message_id": "m-1"}) == b'{"event_id": "e-9"}'
    assert replay_body(b"not json", {"original_message_id": "m-1"}) == b"not json"


def test_replays_matching_dead_letters_and_leaves_the_rest(emulators: EmulatorPair) -> None:
    project = f"replay-{uuid.uuid4().hex[:8]}"
    content, dead = "content-generation-events", "content-generation-events-dead-letter"
    ensure_topics(project, [content, dead])
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    inspect = f"projects/{project}/subscriptions/{dead}-inspect"
    subscriber.create_subscription(request={"name": inspect, "topic": f"projects/{project}/topics/{dead}"})
    tap = PullSubscription(project, content)
    try:
        dead_topic = f"projects/{project}/topics/{dead}"
        given_up = json.dumps({"user_id": "u1", "title": "Rendering"}).encode()
        publisher.publish(
            dead_topic, given_up, error="gave up after 3600 s: Firestore unavailable", original_message_id="m-1"
        ).result(30)
        publisher.publish(dead_topic, b"{}", error="title is required", original_message_id="m-2").result(30)
        publisher.publish(
            dead_topic,
            b'{"user_id": "u1", "tit',
            error="gave up after 3600 s: Firestore unavailable",
            original_message_id="m-3",
            trimmed="body: kept the first 22 of 10485760 bytes, sha256 ...",
        ).result(30)

        assert main(["--project", project, "--dry-run"]) == 0
        assert tap.drain(settle=1.0) == [], "a dry run republishes nothing"

        result = replay(
            subscriber, publisher, inspect, f"projects/{project}/topics/{content}", limit=10, match="gave up"
        )

        # The trimmed one matches too, and is left: it is not the event the worker sent.
        assert (result.replayed, result.skipped) == (1, 2)
        [replayed] = tap.pull(1, timeout=20)
        assert replayed.attributes == {}
        assert replayed.json() == {"user_id": "u1", "title": "Rendering", "event_id": "m-1"}
        assert tap.drain(settle=1.0) == []
        left = subscriber.pull(request={"subscription": inspect, "max_messages": 10}, timeout=10)
        assert sorted(m.message.attributes["original_message_id"] for m in left.received_messages) == ["m-2", "m-3"]
    finally:
        tap.delete()
        subscriber.close()
        publisher.stop()
