"""SSE_MAX_CONNECTIONS_PER_USER across instances, on the Firestore registry (docs/firestore-layout.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from google.cloud import firestore

from shared.backends.firestore_registry import connections_document
from shared.config import Settings
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream, accepted
from tests.support.stream import HEARTBEAT, assert_freed_at, retry_until_accepted, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"


def _connections(settings: Settings, user: str) -> dict[str, Any]:
    snapshot = firestore.Client(project=settings.project_id).collection("connections").document(user).get()
    return snapshot.to_dict() or {}


def test_the_fourth_stream_is_refused_until_one_closes(
    stream_server: ManagedProcess, settings: Settings, new_user: Callable[[], str]
) -> None:
    user = new_user()
    token = token_for(user)
    streams = [EventStream(stream_server.url + STREAM, token=token) for _ in range(3)]
    try:
        for stream in streams:
            assert stream.status == 200
            stream.wait_event("connection.established")
        record = _connections(settings, user)
        assert len(record["live"]) == 3  # type: ignore[arg-type]
        fourth = EventStream(stream_server.url + STREAM, token=token)
        assert fourth.status == 429
        assert fourth.error["error"]["code"] == "too_many_connections"
        assert int(fourth.headers["retry-after"]) >= 1

        streams.pop().close()
        # The disconnect releases the entry (one transaction); then a new stream fits.
        wait_for(lambda: len(_connections(settings, user).get("live", {})) == 2, 10, what="release")  # type: ignore[arg-type]
        replacement = EventStream(stream_server.url + STREAM, token=token)
        streams.append(replacement)
        assert replacement.status == 200
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: not _connections(settings, user), 10, what="the record to be deleted when empty")


def test_entries_of_a_dead_instance_stop_counting_within_two_heartbeats(
    stream_server: ManagedProcess, settings: Settings, new_user: Callable[[], str]
) -> None:
    user = new_user()
    token = token_for(user)
    client = firestore.Client(project=settings.project_id)
    now = datetime.now(UTC)
    # A crashed instance: its heartbeat is recent now, then never again.
    client.collection("stream_instances").document("crashed-instance").set(
        {"heartbeat_at": now, "started_at": now - timedelta(hours=1), "subscription": "", "expire_at": now}
    )
    client.collection("connections").document(user).set(
        connections_document({f"dead-{i}": {"instance": "crashed-instance", "opened_at": now} for i in range(3)}, now)
    )
    refused = EventStream(stream_server.url + STREAM, token=token)
    assert refused.status == 429  # the crashed instance still counts while its heartbeat is fresh
    # Counted until its heartbeat is two intervals old, and not a moment longer.
    stream, attempts = retry_until_accepted(
        lambda: accepted(stream_server.url + STREAM, token=token), now, timeout=2 * HEARTBEAT + 10
    )
    try:
        assert_freed_at(attempts, 2 * HEARTBEAT)
        live = _connections(settings, user)["live"]
        # The connect transaction dropped the dead entries in the same write.
        assert next(iter(live.values()))["instance"] != "crashed-instance" and len(live) == 1
    finally:
        stream.close()


def test_an_instance_record_is_kept_fresh(stream_server: ManagedProcess, settings: Settings) -> None:
    health = httpx.get(f"{stream_server.url}/api/v1/notifications/health").json()
    ref = firestore.Client(project=settings.project_id).collection("stream_instances").document(health["instance_id"])
    first = ref.get().to_dict()
    assert first is not None
    assert first["subscription"].endswith(f"/subscriptions/stream-instance-{health['instance_id']}")

    def heartbeat_moved() -> bool:
        now = ref.get().to_dict()
        assert now is not None, "the instance record is gone"
        return bool(now["heartbeat_at"] > first["heartbeat_at"])

    wait_for(heartbeat_moved, 4 * HEARTBEAT, what="heartbeat")


def test_leftover_entries_of_this_instance_do_not_count(
    stream_server: ManagedProcess, settings: Settings, new_user: Callable[[], str]
) -> None:
    """Entries whose release failed (Firestore was down at disconnect) name a live instance but no live stream."""
    user = new_user()
    instance_id = httpx.get(f"{stream_server.url}/api/v1/notifications/health").json()["instance_id"]
    now = datetime.now(UTC)
    firestore.Client(project=settings.project_id).collection("connections").document(user).set(
        connections_document({f"gone-{i}": {"instance": instance_id, "opened_at": now} for i in range(3)}, now)
    )
    with EventStream(stream_server.url + STREAM, token=token_for(user)) as stream:
        assert stream.status == 200
        assert list(_connections(settings, user)["live"]) == [stream.next().json()["connection_id"]]  # type: ignore[call-overload]


def test_a_client_reconnecting_right_after_the_server_ended_its_streams_is_accepted(
    stream_server: ManagedProcess, new_user: Callable[[], str]
) -> None:
    user = new_user()
    ending = [EventStream(stream_server.url + STREAM, token=token_for(user, ttl=2)) for _ in range(3)]
    fresh: list[EventStream] = []
    try:
        for stream in ending:
            assert stream.wait_event("stream.closing", timeout=10).json() == {"reason": "token_expired"}
            stream.wait_ended(5)
            # The slot was freed before the end reached the client.
            fresh.append(EventStream(stream_server.url + STREAM, token=token_for(user)))
        assert [s.status for s in fresh] == [200, 200, 200]
    finally:
        for stream in ending + fresh:
            stream.close()
