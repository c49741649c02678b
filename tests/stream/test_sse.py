"""SSE framing and the test parser (no server): any text survives, the parser follows the standard."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.stream import sse
from functions.stream.hub import Hub, encode_message
from functions.stream.session import RecentIds, StreamSession
from shared.backends.memory import MemoryStore
from shared.channel import ChannelMessage
from shared.events import ContentEvent
from shared.notification import build_notification
from tests.support.sse import SSEParser

ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)


def _parse(data: bytes, splits: list[int] | None = None) -> list:  # type: ignore[type-arg]
    parser = SSEParser()
    events = []
    start = 0
    for cut in [*sorted(splits or []), len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    parser.close()
    return events


@settings(max_examples=300, deadline=None)
@given(title=ANY_TEXT, message=ANY_TEXT, splits=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_text_is_one_event_with_the_same_json(title: str, message: str, splits: list[int]) -> None:
    data = {"id": "0" * 24, "title": title, "message": message}
    framed = sse.frame("notification", data, "0" * 24)
    framed.decode("ascii")  # ASCII only: no encoding can fail, no U+2028 or NUL on the wire
    events = _parse(framed, [s % (len(framed) + 1) for s in splits])
    assert len(events) == 1
    assert events[0].event == "notification" and events[0].id == "0" * 24
    assert json.loads(events[0].data) == data


def test_hard_cases_of_framing() -> None:
    for text in ["a\nb", "a\rb", "a\r\nb", "nul\x00", "😀", "\u2028\u2029", "data: x\n\nevent: y", "\ud800", "\udfff"]:
        events = _parse(sse.frame("notification", {"t": text}))
        assert len(events) == 1 and events[0].json() == {"t": text}


def test_parser_follows_the_standard() -> None:
    stream = (
        "\ufeff: a comment\r\n"
        "retry: 2500\r"
        "event: first\n"
        "data: line one\n"
        "data:line two\n"
        "data\n"
        "id: 7\n"
        "\n"
        "event: no-data\n"
        "\n"
        "id: bad\x00id\n"
        "retry: soon\n"
        "data: second\r\n"
        "\r\n"
        "data: unfinished"
    ).encode()
    for split in range(len(stream) + 1):  # every chunking, CRLF and UTF-8 sequences split included
        events = _parse(stream, [split])
        assert [(e.event, e.data, e.last_event_id, e.id) for e in events] == [
            ("first", "line one\nline two\n", "7", "7"),
            ("message", "second", "7", None),
        ]
        assert events[0].retry == 2500 and events[1].retry == 2500


def test_recent_ids_are_bounded() -> None:
    recent = RecentIds(3)
    for item in "abcd":
        recent.add(item)
    assert "a" not in recent and all(i in recent for i in "bcd")


def _stored(store: MemoryStore, user: str, count: int) -> list[str]:
    start = datetime.now(UTC) - timedelta(minutes=1)
    ids = []
    for number in range(count):
        event = ContentEvent("content_generation.completed", user, f"t{number}", "", uuid.uuid4().hex)
        stored, _ = store.persist(build_notification(event, 30, start + timedelta(seconds=number)))
        assert stored is not None
        ids.append(stored.id)
    return ids


def test_replay_and_live_merge_without_gap_or_duplicate() -> None:
    async def scenario() -> tuple[list[str | None], list[str]]:
        store = MemoryStore()
        ids = _stored(store, "u1", 4)
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        session = StreamSession("u1", "c1", 16, "0" * 24)
        session.replaying = True
        hub.add(session)
        # Live messages that arrived while the replay query ran: one it also finds, one newer.
        for notification_id in (ids[2], "f" * 24):
            message = ChannelMessage("u1", "notification", {"id": notification_id})
            session.offer(message, encode_message(message))
        await hub.replay(session, ids[0], announce_truncation=True)
        events = _parse(session.take())
        return [e.id for e in events], ids

    got, ids = asyncio.run(scenario())
    assert got == [*ids[1:], "f" * 24]


def test_a_channel_gap_replays_what_open_streams_missed() -> None:
    async def scenario() -> tuple[list[str | None], list[str]]:
        store = MemoryStore()
        before = _stored(store, "u1", 1)  # sent on the stream before the gap
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        session = StreamSession("u1", "c1", 16, "0" * 24)
        hub.add(session)
        first = ChannelMessage("u1", "notification", {"id": before[0], "user_id": "u1"})
        session.offer(first, encode_message(first))
        missed = _stored(store, "u1", 2)  # published while the subscription was down
        hub.gap()  # what the subscription calls from its thread after re-subscribing
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not session.replaying and session.last_id == missed[-1]:
                break
        return [e.id for e in _parse(session.take())], [*before, *missed]

    got, expected = asyncio.run(scenario())
    assert got == expected
