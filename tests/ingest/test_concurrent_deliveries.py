"""50 deliveries of one event at the same moment still make exactly one notification."""

from __future__ import annotations

import json
import threading
import uuid

import httpx

from shared.backends.firestore_store import FirestoreStore
from shared.config import Settings
from tests.support.events import valid_event
from tests.support.processes import ManagedProcess
from tests.support.pubsub import PullSubscription, push_envelope


def test_fifty_simultaneous_deliveries_make_one_notification(
    settings: Settings, ingest_server: ManagedProcess, channel_tap: PullSubscription, user_id: str
) -> None:
    data = json.dumps(valid_event(user_id, event_id=f"evt-{uuid.uuid4().hex}")).encode()
    url = f"{ingest_server.url}/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver(attempt: int) -> None:
        body = push_envelope(data, {}, f"delivery-{attempt}", "projects/p/subscriptions/s")
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            status = client.post(url, json=body).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses.count(200) == 50, f"every delivery acknowledged, got {sorted(statuses)}"
    store = FirestoreStore(settings.project_id)
    [notification] = store.page(user_id, 100).notifications
    published = channel_tap.drain(settle=1.5)
    assert published, "the notification reached the channel"
    assert {m.json()["data"]["id"] for m in published} == {notification.id}
    store.close()
