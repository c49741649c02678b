"""End to end on the emulators: content topic -> ingest function -> Firestore + channel -> stream service -> SSE."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from shared.ids import is_valid_id, parse_cursor
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import BACKLOG, auth, start_stream_service, stored_ids, token_for, wait_stored

STREAM = "/api/v1/notifications/stream"


def test_a_published_event_reaches_its_users_stream_and_no_other(
    stream_server: ManagedProcess, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    alice, bob = new_user(), new_user()
    with (
        EventStream(stream_server.url + STREAM, token=token_for(alice)) as mine,
        EventStream(stream_server.url + STREAM, token=token_for(bob)) as other,
    ):
        assert mine.status == 200 and other.status == 200
        assert mine.headers["content-type"].startswith("text/event-stream")
        assert mine.headers["cache-control"] == "no-cache"
        assert mine.headers["x-accel-buffering"] == "no"
        first = mine.next()
        assert first.event == "connection.established" and first.retry == 1000
        assert first.json()["user_id"] == alice and first.json()["heartbeat_interval"] == 1.0
        other.wait_event("connection.established")

        publish(alice, title="For Alice")
        event = mine.wait_event("notification", timeout=20)
        notification = event.json()
        assert is_valid_id(notification["id"]) and parse_cursor(event.id or "") == (1, 0)  # the feed's 1st change
        assert notification["user_id"] == alice and notification["title"] == "For Alice"
        assert notification["read"] is False

        # A heartbeat of Bob's stream sent after Alice's notification was dispatched.
        other.wait_event("heartbeat")
        other.wait_event("heartbeat")
        assert other.of_type("notification") == []


def test_reconnect_with_last_event_id_gets_every_notification_once_in_order(
    stream_server: ManagedProcess, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    user = new_user()
    token = token_for(user)
    with EventStream(stream_server.url + STREAM, token=token) as first:
        first.wait_event("connection.established")
        publish(user, title="one")
        seen = first.wait_event("notification", timeout=20)
    last_seen = seen.id
    assert last_seen is not None
    for number in range(3):  # missed while away
        publish(user, title=f"missed {number}")
    wait_stored(stream_server, token, 4)

    stop = threading.Event()
    published: list[int] = []

    def keep_publishing() -> None:
        # One at a time, each stored before the next, so ids follow publishing order.
        for number in range(4):
            if stop.is_set():
                return
            publish(user, title=f"live {number}")
            published.append(number)
            wait_stored(stream_server, token, 5 + number)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        with EventStream(stream_server.url + STREAM, token=token, last_event_id=last_seen) as second:
            publisher.join(60)
            expected = [i for i in stored_ids(stream_server, token) if i != seen.json()["id"]]
            assert len(expected) == 7
            second.wait_for(lambda e: e.event == "notification" and e.json()["id"] == expected[-1], timeout=20)
            second.wait_event("heartbeat")  # anything duplicated would have come by now
            got = [e.json()["id"] for e in second.of_type("notification")]
            cursors = [parse_cursor(e.id or "") for e in second.of_type("notification")]
    finally:
        stop.set()
        publisher.join(60)
    # Each once, in the order of the feed's changes (concurrent ingests may commit
    # in another order than their ids), no gap between replay and live.
    assert sorted(got) == expected and len(set(got)) == len(got)
    assert cursors == [(n, 0) for n in range(2, 9)]
    assert second.of_type("replay.truncated") == []


def test_more_missed_than_the_backlog_is_announced_as_truncated(
    stream_server: ManagedProcess, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    user = new_user()
    token = token_for(user)
    with EventStream(stream_server.url + STREAM, token=token) as first:
        first.wait_event("connection.established")
        publish(user)
        last_seen = first.wait_event("notification", timeout=20).id
    assert last_seen is not None
    for _ in range(BACKLOG + 3):
        publish(user)
    ids = wait_stored(stream_server, token, BACKLOG + 4)
    with EventStream(stream_server.url + STREAM, params={"token": token, "last_event_id": last_seen}) as second:
        truncated = second.wait_event("replay.truncated")
        assert truncated.json() == {"missed_at_least": BACKLOG + 3}
        replayed = [e.json()["id"] for e in second.of_type("notification")]
        cursors = [parse_cursor(e.id or "") for e in second.of_type("notification")]
    # The newest BACKLOG changes, oldest first: older ones are one history page away.
    assert cursors == [(n, 0) for n in range(5, BACKLOG + 5)]
    assert len(set(replayed)) == BACKLOG and set(replayed) <= set(ids[1:])


def test_mark_read_reaches_the_users_other_stream(
    stream_server: ManagedProcess, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    user = new_user()
    token = token_for(user)
    with (
        EventStream(stream_server.url + STREAM, token=token) as tab1,
        EventStream(stream_server.url + STREAM, token=token) as tab2,
    ):
        tab1.wait_event("connection.established")
        tab2.wait_event("connection.established")
        publish(user)
        notification_id = tab1.wait_event("notification", timeout=20).json()["id"]
        assert tab2.wait_event("notification").json()["id"] == notification_id
        response = httpx.post(
            f"{stream_server.url}/api/v1/notifications/mark-read",
            json={"notification_ids": [notification_id]},
            headers=auth(token),
        )
        assert response.status_code == 200 and response.json() == {"updated": 1}
        for tab in (tab1, tab2):
            assert tab.wait_event("notification.updated").json() == {"ids": [notification_id], "read": True}
        response = httpx.delete(f"{stream_server.url}/api/v1/notifications/{notification_id}", headers=auth(token))
        assert response.status_code == 204
        assert tab2.wait_event("notification.deleted").json() == {"ids": [notification_id]}


def test_a_user_with_streams_on_two_processes_gets_everything_on_both(
    stream_server: ManagedProcess,
    publish: Callable[..., str],
    new_user: Callable[[], str],
    emulators_session: object,
) -> None:
    second_server = start_stream_service(emulators_session.env())  # type: ignore[attr-defined]
    try:
        user = new_user()
        token = token_for(user)
        with (
            EventStream(stream_server.url + STREAM, token=token) as one,
            EventStream(second_server.url + STREAM, token=token) as two,
        ):
            one.wait_event("connection.established")
            two.wait_event("connection.established")
            for number in range(3):
                publish(user, title=f"n{number}")
            ids = wait_stored(stream_server, token, 3)
            for stream in (one, two):
                stream.wait_for(lambda e: e.event == "notification" and e.json()["id"] == ids[-1], timeout=20)
                assert sorted(e.json()["id"] for e in stream.of_type("notification")) == ids
    finally:
        second_server.stop()


def test_a_stream_ends_when_its_token_expires(stream_server: ManagedProcess, new_user: Callable[[], str]) -> None:
    with EventStream(stream_server.url + STREAM, token=token_for(new_user(), ttl=2)) as stream:
        stream.wait_event("connection.established")
        closing = stream.wait_event("stream.closing", timeout=10)
        assert closing.json() == {"reason": "token_expired"}
        stream.wait_ended(5)


def test_any_text_arrives_intact_as_one_event(
    stream_server: ManagedProcess, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    user = new_user()
    title = "a\nb\rc\r\nd\x00e 😀 \u2028\u2029 data: x"
    message = "line\n\ndata: injected\n\nevent: notification.deleted\nid: 0\r\n\r\n:comment \\u0000 \ufeff end"
    with EventStream(stream_server.url + STREAM, token=token_for(user)) as stream:
        stream.wait_event("connection.established")
        publish(user, title=title, message=message, metadata={"k": "\n\r\u2028"})
        event = stream.wait_event("notification", timeout=20)
        stream.wait_event("heartbeat")
        assert event.json()["title"] == title
        assert event.json()["message"] == message
        assert event.json()["metadata"] == {"k": "\n\r\u2028"}
        assert [e.event for e in stream.events if e.event not in ("heartbeat",)] == [
            "connection.established",
            "notification",
        ]
