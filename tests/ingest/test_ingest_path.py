"""The real trigger path: worker publish -> push subscription -> functions-framework -> Firestore + channel."""

from __future__ import annotations

import json
import threading
import uuid

import httpx

from devtools.cli import publish_event
from shared.backends.firestore_store import FirestoreStore
from shared.channel import ascii_json
from shared.config import Settings
from tests.support.events import MALFORMED, valid_event
from tests.support.processes import ManagedProcess
from tests.support.pubsub import PullSubscription, push_envelope
from tests.support.waiting import wait_for


def test_published_event_reaches_firestore_and_the_users_channel(
    settings: Settings, push_subscription: PullSubscription, channel_tap: PullSubscription, user_id: str
) -> None:
    other_user = f"{user_id}-other"
    store = FirestoreStore(settings.project_id)
    publish_event(settings.project_id, settings.content_events_topic, valid_event(user_id, title="Video ready!"))

    stored = wait_for(lambda: store.page(user_id, 10).notifications, timeout=20, what="the notification in Firestore")
    assert len(stored) == 1
    assert stored[0].title == "Video ready!" and stored[0].user_id == user_id and stored[0].read is False

    [message] = channel_tap.pull(1, timeout=20)
    assert message.attributes.items() >= {
        "channel": f"notifications:channel:{user_id}",
        "user_id": user_id,
        "type": "notification",
        "format": "sse-data",
        "seq": "1",
    }.items()
    announced = message.channel_message()
    assert announced.data["id"] == stored[0].id and announced.seq == 1 and announced.published_at is not None
    # The data is the stream's data: line for it, as the stream would have written it.
    assert message.data == ascii_json(stored[0].to_dict()).encode()
    assert store.page(other_user, 10).notifications == []
    # Pub/Sub may push the event again (an acknowledgement that came late); a redelivery
    # announces the same change again, which streams drop by its number: nothing else comes.
    assert {m.channel_message().data["id"] for m in channel_tap.drain(settle=1.0)} <= {stored[0].id}
    store.close()


def test_same_event_delivered_ten_times_yields_one_notification(
    settings: Settings, ingest_server: ManagedProcess, channel_tap: PullSubscription, user_id: str
) -> None:
    data = json.dumps(valid_event(user_id, event_id=f"evt-{uuid.uuid4().hex}")).encode()
    url = f"{ingest_server.url}/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver(attempt: int) -> None:
        body = push_envelope(data, {}, f"delivery-{attempt}", "projects/p/subscriptions/s")
        status = httpx.post(url, json=body, timeout=30).status_code
        with lock:
            statuses.append(status)

    for attempt in range(5):
        deliver(attempt)
    threads = [threading.Thread(target=deliver, args=(5 + i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 10, "every delivery must be acknowledged"
    store = FirestoreStore(settings.project_id)
    notifications = store.page(user_id, 100).notifications
    assert len(notifications) == 1
    published = channel_tap.drain(settle=1.0)
    assert {m.channel_message().data["id"] for m in published} == {notifications[0].id}
    store.close()


def test_malformed_events_are_dead_lettered_with_a_reason_and_store_nothing(
    settings: Settings,
    push_subscription: PullSubscription,
    dead_letter_tap: PullSubscription,
    channel_tap: PullSubscription,
) -> None:
    marker = uuid.uuid4().hex
    for case_id, data, attributes, _ in MALFORMED:
        publish_event(
            settings.project_id,
            settings.content_events_topic,
            data or b"",
            30.0,
            **{**attributes, "test_case": f"{marker}:{case_id}"},
        )
    received = dead_letter_tap.pull(len(MALFORMED), timeout=60)
    by_case = {
        m.attributes["test_case"].split(":", 1)[1]: m
        for m in received
        if m.attributes.get("test_case", "").startswith(marker)
    }
    assert set(by_case) == {case[0] for case in MALFORMED}
    for case_id, data, _, reason in MALFORMED:
        assert by_case[case_id].data == data, f"{case_id}: dead letter must carry the data unchanged"
        assert reason in by_case[case_id].attributes["error"], case_id
    assert channel_tap.drain(settle=1.0) == []
