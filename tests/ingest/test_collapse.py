"""One notification per content request, on the Firestore emulator (SPEC section 3).

The ingest function's logic runs in this process against the real emulators
(Firestore for the store, Pub/Sub for the live channel), one delivery at a time
in the order a test chooses, which is how late and repeated deliveries are forced.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryDeadLetters
from shared.backends.pubsub_channel import PubSubChannel
from shared.config import Settings
from shared.feed import COALESCE_SECONDS
from tests.support.emulators import EmulatorPair
from tests.support.events import valid_event
from tests.support.pubsub import PullSubscription

REQUEST_STEPS = [
    ("content_request.created", None, "2026-11-28T10:00:00Z"),
    ("content_request.queued", None, "2026-11-28T10:00:01Z"),
    ("content_generation.started", 0, "2026-11-28T10:00:02Z"),
    ("content_generation.progress", 25, "2026-11-28T10:00:03Z"),
    ("content_generation.progress", 50, "2026-11-28T10:00:04Z"),
    ("content_generation.progress", 75, "2026-11-28T10:00:05Z"),
    ("content_generation.completed", 100, "2026-11-28T10:00:06Z"),
]


@pytest.fixture
def backends(emulators: EmulatorPair, settings: Settings) -> Iterator[Backends]:
    store = FirestoreStore(emulators.project, timeout=10)
    channel = PubSubChannel(emulators.project, settings.notifications_topic, timeout=10)
    yield Backends(store, channel, MemoryDeadLetters())
    channel.close()
    store.close()


def _event(user: str, request: str, step: tuple[str, int | None, str], **extra: Any) -> dict[str, Any]:
    event_type, progress, timestamp = step
    return valid_event(
        user,
        event_type=event_type,
        content_request_id=request,
        progress_percentage=progress,
        timestamp=timestamp,
        title=event_type,
        **extra,
    )


def _delivery(event: dict[str, Any], message_id: str | None = None) -> PubsubMessage:
    return PubsubMessage(json.dumps(event).encode(), {}, message_id or uuid.uuid4().hex, datetime.now(UTC))


def _changes(backends: Backends, user: str) -> list[Any]:
    return backends.store.changes(user, 0, 1000)


def test_a_lifecycle_with_late_and_repeated_deliveries_is_one_completed_unread_notification(
    backends: Backends, settings: Settings, user_id: str, broadcast_tap: PullSubscription
) -> None:
    request = f"req-{uuid.uuid4().hex[:8]}"
    deliveries = [_delivery(_event(user_id, request, step)) for step in REQUEST_STEPS]
    late_progress = _delivery(_event(user_id, request, ("content_generation.progress", 90, "2026-11-28T10:00:05.5Z")))
    outcomes = [ingest(d, backends, settings) for d in deliveries]
    assert outcomes[0] is Outcome.STORED and set(outcomes[1:]) == {Outcome.UPDATED}

    # Read while in progress, then a progress that arrives after completion, and redeliveries of everything.
    assert ingest(late_progress, backends, settings) is Outcome.IGNORED
    again = [ingest(d, backends, settings) for d in deliveries]
    assert again[-1] is Outcome.DUPLICATE  # the event whose state is stored: announced again, not stored again
    assert set(again[:-1]) == {Outcome.IGNORED}

    page = backends.store.page(user_id, 100)
    [notification] = page.notifications
    assert notification.event_type == "content_generation.completed"
    assert notification.progress_percentage == 100 and notification.read is False
    assert notification.content_request_id == request
    assert backends.store.unread_count(user_id) == 1
    changes = _changes(backends, user_id)
    assert [c.seq for c in changes] == list(range(1, len(REQUEST_STEPS) + 1))  # one change per stored state
    assert {c.data["id"] for c in changes} == {notification.id}
    # This channel has no router: it publishes to every instance.
    published = broadcast_tap.pull(len(REQUEST_STEPS) + 1, timeout=20) + broadcast_tap.drain(settle=1.0)
    mine = [m.channel_message() for m in published if m.channel_message().user_id == user_id]
    # Every state once, plus the completed state announced again by its redelivery.
    assert sorted(m.seq or 0 for m in mine) == [*range(1, len(REQUEST_STEPS) + 1), len(REQUEST_STEPS)]


def test_intermediate_events_keep_the_read_state_and_completion_makes_it_unread(
    backends: Backends, settings: Settings, user_id: str
) -> None:
    request = f"req-{uuid.uuid4().hex[:8]}"
    ingest(_delivery(_event(user_id, request, REQUEST_STEPS[2])), backends, settings)
    [notification] = backends.store.page(user_id, 10).notifications
    assert [c.data["ids"] for c in backends.store.set_read(user_id, [notification.id], True)] == [[notification.id]]
    assert backends.store.unread_count(user_id) == 0
    ingest(_delivery(_event(user_id, request, REQUEST_STEPS[3])), backends, settings)
    [progressed] = backends.store.page(user_id, 10).notifications
    assert progressed.read is True and progressed.progress_percentage == 25 and progressed.id == notification.id
    failure = ("content_generation.failed", None, "2026-11-28T10:00:09Z")
    ingest(_delivery(_event(user_id, request, failure)), backends, settings)
    [failed] = backends.store.page(user_id, 10).notifications
    assert failed.read is False and failed.event_type == "content_generation.failed"
    assert backends.store.unread_count(user_id) == 1


def test_a_deleted_request_notification_is_not_resurrected(
    backends: Backends, settings: Settings, user_id: str
) -> None:
    request = f"req-{uuid.uuid4().hex[:8]}"
    ingest(_delivery(_event(user_id, request, REQUEST_STEPS[2])), backends, settings)
    [notification] = backends.store.page(user_id, 10).notifications
    assert backends.store.delete(user_id, notification.id) is not None
    done = _delivery(_event(user_id, request, REQUEST_STEPS[-1]))
    assert ingest(done, backends, settings) is Outcome.IGNORED
    assert backends.store.page(user_id, 10).notifications == []


def test_progress_ten_times_a_second_is_coalesced_to_at_most_one_write_per_second(
    backends: Backends, settings: Settings, user_id: str
) -> None:
    """Two workers report one request's progress 10 times a second each for 3 s, then it completes."""
    request = f"req-{uuid.uuid4().hex[:8]}"
    ingest(_delivery(_event(user_id, request, REQUEST_STEPS[2])), backends, settings)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []
    started = time.monotonic()

    def worker(offset: int) -> None:
        for number in range(30):
            # 10 a second of the workers' own time: 0.1 s apart, the two workers 50 ms apart.
            moment = f"2026-11-28T10:01:{number * 0.1 + offset * 0.05:06.3f}Z"
            step = ("content_generation.progress", min(99, number * 3 + offset), moment)
            try:
                outcomes.append(ingest(_delivery(_event(user_id, request, step)), backends, settings))
            except BaseException as exc:  # reported below
                errors.append(exc)
            time.sleep(max(0.0, started + (number + 1) * 0.1 - time.monotonic()))

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert errors == []
    assert len(outcomes) == 60
    writes = [c for c in _changes(backends, user_id) if c.data.get("event_type") == "content_generation.progress"]
    # At most one progress write per COALESCE_SECONDS of the events' time (3 s of them), plus the first.
    assert 1 <= len(writes) <= 3 / COALESCE_SECONDS + 1, (len(writes), elapsed)
    assert outcomes.count(Outcome.UPDATED) == len(writes)
    done = ("content_generation.completed", 100, "2026-11-28T10:02:00Z")
    assert ingest(_delivery(_event(user_id, request, done)), backends, settings) is Outcome.UPDATED
    [notification] = backends.store.page(user_id, 10).notifications
    assert notification.event_type == "content_generation.completed"
    assert backends.store.unread_count(user_id) == 1
