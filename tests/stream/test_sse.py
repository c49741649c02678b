"""SSE framing and the test parser (no server): any text survives, the parser follows the standard."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.stream import sse
from functions.stream.hub import HEAD, Hub, encode_message
from functions.stream.session import StreamSession
from shared.backends.memory import MemoryStore
from shared.channel import ChannelMessage
from shared.events import ContentEvent
from shared.feed import change_message
from shared.ids import format_cursor
from shared.notification import build_notification
from tests.support.fuzzing import examples
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


@settings(max_examples=examples(300), deadline=None)
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


def _stored(store: MemoryStore, user: str, count: int) -> list[ChannelMessage]:
    """``count`` new notifications of ``user``, and the channel messages that announce them."""
    start = datetime.now(UTC) - timedelta(minutes=1)
    messages = []
    for number in range(count):
        event = ContentEvent("content_generation.completed", user, f"t{number}", "", uuid.uuid4().hex)
        applied = store.apply(build_notification(event, 30, start + timedelta(seconds=number)))
        assert applied.change is not None
        messages.append(change_message(user, applied.change))
    return messages


async def _connected(store: MemoryStore) -> tuple[Hub, StreamSession]:
    """A hub with one stream of u1 opened without Last-Event-ID, as the endpoint opens it."""
    hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
    session = StreamSession("u1", "c1", 16, HEAD)
    session.replaying = True
    hub.add(session)
    await hub.replay(session, HEAD, announce_truncation=True)
    return hub, session


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_replay_and_live_merge_without_gap_or_duplicate() -> None:
    async def scenario() -> list[str | None]:
        store = MemoryStore()
        messages = _stored(store, "u1", 5)
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        session = StreamSession("u1", "c1", 16, format_cursor(1, 0))
        session.replaying = True
        hub.add(session)
        # Live messages that arrived while the replay query ran: one it also finds, one newer.
        for message in (messages[2], messages[4]):
            session.offer(message, encode_message(message))
        await hub.replay(session, session.baseline_id, announce_truncation=True)
        return [e.id for e in _parse(session.take())]

    assert asyncio.run(scenario()) == [format_cursor(n, 0) for n in (2, 3, 4, 5)]


def test_a_change_published_before_an_earlier_one_waits_for_it() -> None:
    """Commit order 1, 2; publish order 2, 1: the stream reads 1 from the store, sends 1 then 2, drops the late 1."""

    async def scenario() -> list[str | None]:
        store = MemoryStore()
        hub, session = await _connected(store)
        first, second = _stored(store, "u1", 2)
        hub.receive([second])
        await _until(lambda: session.user_seq == 2)
        hub.receive([first])
        third = _stored(store, "u1", 1)[0]
        hub.receive([third])
        await _until(lambda: session.user_seq == 3)
        return [e.id for e in _parse(session.take())]

    assert asyncio.run(scenario()) == [format_cursor(n, 0) for n in (1, 2, 3)]


def test_a_channel_gap_replays_what_open_streams_missed() -> None:
    async def scenario() -> list[str | None]:
        store = MemoryStore()
        hub, session = await _connected(store)
        [first] = _stored(store, "u1", 1)  # sent on the stream before the gap
        hub.receive([first])
        await _until(lambda: session.user_seq == 1)
        _stored(store, "u1", 2)  # published while the subscription was down
        hub.gap()  # what the subscription calls from its thread after re-subscribing
        await _until(lambda: not session.replaying and session.user_seq == 3)
        return [e.id for e in _parse(session.take())]

    assert asyncio.run(scenario()) == [format_cursor(n, 0) for n in (1, 2, 3)]


def test_a_muted_type_moves_the_position_without_being_sent() -> None:
    async def scenario() -> list[tuple[str | None, str]]:
        store = MemoryStore()
        store.set_muted("u1", frozenset({"content_generation.completed"}))
        hub, session = await _connected(store)
        [muted] = _stored(store, "u1", 1)
        hub.receive([muted])
        event = ContentEvent("system.update", "u1", "shown", "", uuid.uuid4().hex)
        applied = store.apply(build_notification(event, 30))
        assert applied.change is not None
        hub.receive([change_message("u1", applied.change)])
        await _until(lambda: session.user_seq == 2)
        return [(e.id, e.json()["title"]) for e in _parse(session.take())]

    assert asyncio.run(scenario()) == [(format_cursor(2, 0), "shown")]


def test_a_message_json_cannot_carry_is_dropped_and_the_rest_of_its_batch_delivered() -> None:
    """Regression: a Redis-shaped publish with NaN in its payload raised out of the hub's dispatch.

    The older envelope carries NaN (Python's JSON writes it), the event's JSON
    refuses it; the exception ended the loop callback and lost the messages
    after it in the same batch.
    """

    async def scenario() -> list[str]:
        store = MemoryStore()
        hub, session = await _connected(store)
        session.take()
        bad = ChannelMessage("u1", "notification", {"id": "x", "progress": float("nan")})
        good = ChannelMessage("u1", "notification", {"id": "y", "title": "fine"})
        hub.receive([ChannelMessage.decode(*bad.pubsub_message()), good])
        await _until(lambda: bool(session.queue))
        return [json.loads(e.data)["id"] for e in _parse(session.take()) if e.event == "notification"]

    assert asyncio.run(scenario()) == ["y"]
