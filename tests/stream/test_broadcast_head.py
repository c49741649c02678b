"""A replay reads the broadcasts' head only when the process cannot vouch for it (no server).

A process receives every broadcast live after it subscribed, so once it has
read the head it knows it as well as the store does, and a stream's replay
reads the user's document alone. After a channel gap, or for a cursor past
what the process has seen, it reads the head again. Broadcasts are never lost
for it: what a connecting stream missed is replayed from the store.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from functions.stream.hub import HEAD, Hub
from functions.stream.session import StreamSession
from shared.backends.memory import MemoryStore
from shared.channel import ChannelMessage
from shared.events import ContentEvent
from shared.feed import FeedHead, change_message
from shared.ids import format_cursor
from shared.notification import build_notification
from tests.support.sse import SSEParser


class RecordingStore(MemoryStore):
    """The memory store, noting the broadcast number each head read was given."""

    def __init__(self) -> None:
        super().__init__()
        self.head_calls: list[int | None] = []

    def head(self, user_id: str, broadcast_seq: int | None = None) -> FeedHead:
        self.head_calls.append(broadcast_seq)
        return super().head(user_id, broadcast_seq)


def _broadcast(store: MemoryStore, number: int) -> ChannelMessage:
    event = ContentEvent(
        "content_generation.completed", "", f"b{number}", "", uuid.uuid4().hex, audience="all"
    )
    applied = store.apply(build_notification(event, 30, datetime.now(UTC) - timedelta(minutes=1)))
    assert applied.change is not None
    return change_message("", applied.change)


async def _open(hub: Hub, user: str, cursor: str) -> StreamSession:
    session = StreamSession(user, uuid.uuid4().hex, 64, cursor)
    session.replaying = True
    hub.add(session)
    await hub.replay(session, cursor, announce_truncation=True)
    return session


def _ids(session: StreamSession) -> list[str | None]:
    parser = SSEParser()
    return [e.id for e in parser.feed(session.take()) if e.event == "notification"]


def test_the_head_is_read_once_then_known_from_live_broadcasts() -> None:
    async def scenario() -> None:
        store = RecordingStore()
        _broadcast(store, 1)
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        await _open(hub, "u1", HEAD)
        assert store.head_calls == [None]  # nothing known yet: read
        await _open(hub, "u2", HEAD)
        assert store.head_calls[-1] == 1  # known from that read
        hub.receive([_broadcast(store, 2)])
        await asyncio.sleep(0)  # the dispatch is scheduled on the loop
        await _open(hub, "u3", HEAD)
        assert store.head_calls[-1] == 2  # known from the live broadcast

    asyncio.run(scenario())


def test_a_gap_or_a_cursor_past_what_is_known_reads_the_head_again() -> None:
    async def scenario() -> None:
        store = RecordingStore()
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        await _open(hub, "u1", HEAD)  # the head read: no broadcast yet, 0 known
        _broadcast(store, 1)  # committed, its live message not here yet
        # A client that saw broadcast 1 elsewhere: the process does not know of it.
        session = await _open(hub, "u2", format_cursor(0, 1))
        assert store.head_calls[-1] is None
        assert session.broadcast_seq == 1
        hub.replay_all()  # a channel gap: what was known may have been missed since
        await _open(hub, "u3", HEAD)
        assert store.head_calls[-1] is None

    asyncio.run(scenario())


def test_broadcasts_a_stream_missed_before_a_known_head_are_replayed_from_the_store() -> None:
    """Cursor at broadcast 1, the process knows 3: broadcasts 2 and 3 come from the store, then 4 live, once each."""

    async def scenario() -> list[str | None]:
        store = RecordingStore()
        hub = Hub(store, backlog=10, loop=asyncio.get_running_loop())
        live = [_broadcast(store, n) for n in (1, 2, 3)]
        await _open(hub, "u1", HEAD)  # reads the head: 3
        session = await _open(hub, "u2", format_cursor(0, 1))
        assert store.head_calls[-1] == 3
        hub.receive([live[2], _broadcast(store, 4)])  # 3 again (already replayed), then 4
        for _ in range(100):
            if session.broadcast_seq == 4:
                break
            await asyncio.sleep(0.01)
        return _ids(session)

    assert asyncio.run(scenario()) == [format_cursor(0, n) for n in (2, 3, 4)]
