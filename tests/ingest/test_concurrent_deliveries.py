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
from tests.support.waiting import wait_for


def test_fifty_simultaneous_deliveries_make_one_notification(
    settings: Settings, ingest_server: ManagedProcess, channel_tap: PullSubscription, user_id: str
) -> None:
    data = json.dumps(valid_event(user_id, event_id=f"evt-{uuid.uuid4().hex}")).encode()
    url = f"{ingest_server.url}/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    barrier = threading.Barrier(50)
    statuses: list[int] = []
    lock = threading.Lock()

    def post(attempt: int) -> int:
        body = push_envelope(data, {}, f"delivery-{attempt}", "projects/p/subscriptions/s")
        try:
            with httpx.Client(timeout=30) as client:
                return client.post(url, json=body).status_code
        except httpx.HTTPError:
            return 0

    def deliver(attempt: int) -> None:
        barrier.wait()
        status = post(attempt)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Fifty concurrent first deliveries contend on the user's feed; one that lost the
    # contention answers an error and Pub/Sub pushes it again, as here, until acknowledged.
    first = sorted(statuses)
    log_start = len(ingest_server.log())
    for attempt, status in enumerate(list(statuses)):
        if status != 200:

            def redelivered(again: int = 100 + attempt) -> bool:
                return post(again) == 200

            try:
                wait_for(redelivered, 90, what="a redelivery acknowledged")
            except AssertionError as exc:
                said = ingest_server.log()[log_start:][-4000:]
                raise AssertionError(f"{exc}; first answers {first}; ingest said:\n{said}") from exc
            statuses[attempt] = 200
    assert statuses.count(200) == 50, f"every delivery acknowledged, got {sorted(statuses)}"
    store = FirestoreStore(settings.project_id)
    [notification] = store.page(user_id, 100).notifications
    published = channel_tap.drain(settle=1.5)
    assert published, "the notification reached the channel"
    assert {m.channel_message().data["id"] for m in published} == {notification.id}
    store.close()
