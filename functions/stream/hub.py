"""The process's streams, by user, and the hand-over from the channel thread.

The channel calls ``receive`` with every message of one delivery: on the
hub's loop (the subscription's streaming pull runs there) or from another
thread (the bench injection route's worker). They are appended to a list and
one ``call_soon_threadsafe`` per batch wakes the loop, which dispatches each
message to the streams of its user only (a broadcast to every stream),
encoding it once for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from functions.stream import metrics, sse
from functions.stream.session import StreamSession
from shared.channel import ChannelMessage
from shared.errors import BackendUnavailable
from shared.feed import Change, change_message
from shared.ids import parse_cursor
from shared.store import NotificationStore

logger = logging.getLogger(__name__)

# Messages waiting for the loop. Beyond this the loop is not keeping up: new
# messages are dropped and every stream replays from the store instead, so a
# burst can never grow the process's memory without bound.
INBOX_LIMIT = 50_000
# How many streams replay at once after a channel gap (each is one store query).
GAP_REPLAY_CONCURRENCY = 8
_GAP_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# Replay rounds that read nothing new before a live message past the store's changes is dropped.
STALLED_ROUNDS = 3


# The cursor of a stream opened without Last-Event-ID: the replay resolves it to
# the feed's head when it runs, after the stream is registered, so every change
# committed from then on reaches the stream (live, or by a replay of a gap).
HEAD = "head"


def encode_message(message: ChannelMessage) -> bytes:
    """The event without its ``id:`` line, which each stream adds (its own position)."""
    if message.wire is not None:
        # The data as it came over the channel, already the data: line's JSON.
        return b"event: " + message.type.encode("ascii") + b"\ndata: " + message.wire + b"\n\n"
    return sse.frame(message.type, message.data)


@dataclass(frozen=True)
class Fetched:
    """What a replay sends: the changes, oldest first, and where the stream stands before them."""

    changes: list[ChannelMessage]
    start: tuple[int, int]  # (user, broadcast) position before the first change
    missed: int
    truncated: bool
    muted: frozenset[str]


class Hub:
    def __init__(
        self, store: NotificationStore, backlog: int, loop: asyncio.AbstractEventLoop, heartbeat_slices: int = 1
    ) -> None:
        self._store = store
        self._backlog = backlog
        self._loop = loop
        self._users: dict[str, set[StreamSession]] = {}
        # Streams are spread over slices, one slice heartbeaten per tick, so
        # 10,000 streams never all wake in the same loop turn.
        self.heartbeat_slices = max(1, heartbeat_slices)
        self._slices: list[set[StreamSession]] = [set() for _ in range(self.heartbeat_slices)]
        self._added = 0
        self._tick = 0
        self._inbox: list[ChannelMessage] = []
        self._inbox_lock = threading.Lock()
        self._overflowed = False
        self._gap_semaphore = asyncio.Semaphore(GAP_REPLAY_CONCURRENCY)
        # A broadcast number every later broadcast reaches this process after, live:
        # a replay then reads the user's document only, not the broadcasts' head.
        # Unknown (None) until a read of the head, and again after a channel gap.
        self._broadcasts_known: int | None = None
        self._gaps = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.count = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the hub's streams live on (the channel may receive on it too)."""
        return self._loop

    # Streams ------------------------------------------------------------------------
    def add(self, session: StreamSession) -> None:
        self._users.setdefault(session.user_id, set()).add(session)
        session.heartbeat_slot = self._added % self.heartbeat_slices
        self._slices[session.heartbeat_slot].add(session)
        self._added += 1
        self.count += 1
        metrics.STREAMS_OPEN.set(self.count)

    def remove(self, session: StreamSession) -> None:
        sessions = self._users.get(session.user_id)
        if sessions is None or session not in sessions:
            return
        sessions.discard(session)
        self._slices[session.heartbeat_slot].discard(session)
        if not sessions:
            del self._users[session.user_id]
        self.count -= 1
        metrics.STREAMS_OPEN.set(self.count)

    def sessions(self) -> list[StreamSession]:
        return [s for group in self._users.values() for s in group]

    # From the channel thread ------------------------------------------------------
    def receive(self, messages: Sequence[ChannelMessage]) -> None:
        """The channel's handler: one delivery's messages, in order; safe to call from any thread."""
        with self._inbox_lock:
            room = INBOX_LIMIT - len(self._inbox)
            if room < len(messages):
                self._overflowed = True
                messages = messages[: max(0, room)]
            first = not self._inbox
            self._inbox.extend(messages)
        if first and messages:
            try:
                self._loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

    def gap(self) -> None:
        """The channel's gap handler: messages may have been lost; safe from any thread."""
        try:
            self._loop.call_soon_threadsafe(self.replay_all)
        except RuntimeError:
            pass

    # On the loop ---------------------------------------------------------------------
    def _dispatch(self) -> None:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
            overflowed, self._overflowed = self._overflowed, False
        now = time.time()
        metrics.CHANNEL_MESSAGES.inc(len(batch))
        for message in batch:
            latency = max(0.0, now - message.sent_at)
            metrics.FANOUT_LATENCY.observe(latency)
            metrics.FANOUT_WINDOW.add(latency)
            if message.broadcast:
                if message.seq is not None and self._broadcasts_known is not None:
                    self._broadcasts_known = max(self._broadcasts_known, message.seq)
                for user_id, streams in list(self._users.items()):
                    self._offer(streams, _for_user(message, user_id))
                continue
            sessions = self._users.get(message.user_id)
            if not sessions:
                continue
            if message.data.get("user_id", message.user_id) != message.user_id:
                # Routing is by the message's user; a body naming someone else is never shown.
                logger.error("dropping a channel message whose data names another user")
                continue
            self._offer(sessions, message)
            metrics.DELIVERIES.observe(message, now)
        if overflowed:
            logger.error("channel inbox overflowed; streams replay from the store", extra={"limit": INBOX_LIMIT})
            self.replay_all()

    def _offer(self, sessions: set[StreamSession], message: ChannelMessage) -> None:
        try:
            encoded = encode_message(message)
        except ValueError:
            # Data JSON cannot carry (NaN, from a Redis-shaped publish): dropped alone,
            # not with the rest of the delivery.
            logger.error("dropping a channel message whose data is not JSON", extra={"type": message.type})
            return
        for session in list(sessions):
            if session.offer(message, encoded):
                # A change before this one has not arrived: read it from the store.
                metrics.SKIP_REPLAYS.inc()
                self._start_replay(session)

    def heartbeat(self) -> int:
        """One tick: heartbeat the next slice (``heartbeat_slices`` ticks per interval); returns its streams."""
        group = self._slices[self._tick % self.heartbeat_slices]
        self._tick += 1
        if not group:
            return 0
        encoded = sse.heartbeat()
        for session in list(group):
            session.heartbeat(encoded)
        return len(group)

    def shutdown(self) -> None:
        """Announce ``shutdown`` on every stream; the endpoints then end them."""
        if self.shutting_down:
            return
        self.shutting_down = True
        sessions = self.sessions()
        logger.info("closing every stream for shutdown", extra={"streams": len(sessions)})
        for session in sessions:
            session.close("shutdown")

    def replay_all(self) -> None:
        metrics.GAP_REPLAYS.inc()
        # Broadcasts may have been missed: the next replays read the broadcasts' head again.
        self._broadcasts_known = None
        self._gaps += 1
        sessions = [s for s in self.sessions() if not s.done]
        logger.warning("channel gap: replaying open streams from the store", extra={"streams": len(sessions)})
        for session in sessions:
            if session.replaying:
                session.resync = True  # the running replay goes round again
                continue
            session.replaying = True
            self._start_replay(session)

    def _start_replay(self, session: StreamSession) -> None:
        task = self._loop.create_task(self._gap_replay(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gap_replay(self, session: StreamSession) -> None:
        for attempt in range(len(_GAP_RETRY_DELAYS) + 1):
            try:
                async with self._gap_semaphore:
                    await self.replay(session, session.replay_from, announce_truncation=True)
                return
            except BackendUnavailable as exc:
                if session.done or attempt == len(_GAP_RETRY_DELAYS):
                    logger.error("gap replay failed; live messages continue", extra={"error": str(exc)})
                    break
                await asyncio.sleep(_GAP_RETRY_DELAYS[attempt])
            except Exception:
                logger.exception("gap replay failed; live messages continue")
                break
        # Give up replaying but keep the stream: flush what was buffered.
        session.resync = False
        session.end_replay()

    # Replay --------------------------------------------------------------------------
    async def fetch(self, user_id: str, after_cursor: str) -> Fetched:
        """The changes of ``user_id``'s feed after ``after_cursor`` (``HEAD``: none, from the head on).

        Per log (the user's, the broadcasts'), at most the backlog: when more
        were missed, or the cursor is older than the log reaches, the newest
        backlog ones and ``truncated`` (the client reloads the history). A
        cursor that is not one of this feed's (ahead of its head, or a
        notification id from before change numbers) is truncated too.
        """
        store = self._store
        cursor = None if after_cursor == HEAD else parse_cursor(after_cursor)
        known = self._broadcasts_known
        if cursor is not None and known is not None and cursor[1] > known:
            known = None  # the client saw a broadcast this process has not: read the head
        gaps = self._gaps
        head = await asyncio.to_thread(store.head, user_id, known)
        if known is None and gaps == self._gaps:
            # Read after this process subscribed and with no gap since: every later broadcast arrives live.
            self._broadcasts_known = max(self._broadcasts_known or 0, head.broadcast_seq)
        position = (head.user_seq, head.broadcast_seq) if after_cursor == HEAD else cursor
        if position is None or position[0] > head.user_seq or position[1] > head.broadcast_seq:
            return Fetched([], (head.user_seq, head.broadcast_seq), 1, True, head.muted_event_types)
        user, broadcast = position
        (user_changes, user_start, user_missed), (broadcasts, broadcast_start, broadcast_missed) = await asyncio.gather(
            self._log(store.changes, user_id, user, head.user_seq),
            self._log(store.broadcast_changes, user_id, broadcast, head.broadcast_seq),
        )
        changes = [change_message(user_id, c) for c in user_changes]
        # Broadcasts after the user's changes: each comes with the user's current
        # state of it, which is at least as new as any of those changes.
        changes += [change_message(user_id, replace(c, broadcast=True)) for c in broadcasts]
        missed = user_missed + broadcast_missed
        return Fetched(changes, (user_start, broadcast_start), missed, missed > 0, head.muted_event_types)

    async def _log(self, read: Any, user_id: str, after: int, head: int) -> tuple[list[Change], int, int]:
        """One log after ``after``: (changes, position before them, how many were missed at least)."""
        if after >= head:
            # Nothing up to the head; what commits after it arrives live (or by a gap replay).
            return [], after, 0
        backlog = self._backlog
        found: list[Change] = await asyncio.to_thread(read, user_id, after, backlog + 1)
        if len(found) <= backlog and (not found or found[0].seq == after + 1):
            return found, after, 0
        newest_from = max(after, head - backlog)
        newest: list[Change] = await asyncio.to_thread(read, user_id, newest_from, backlog)
        start = newest[0].seq - 1 if newest else head
        return newest, start, max(1, head - after)

    async def replay(self, session: StreamSession, after_cursor: str, *, announce_truncation: bool) -> None:
        """Send what ``session`` missed after ``after_cursor``, then what arrived live meanwhile.

        The session must already be registered (so nothing published during the
        query is missed) and in replay mode (so live messages wait and are merged
        by change number afterwards).
        """
        stalled = 0
        while True:
            fetched = await self.fetch(session.user_id, after_cursor)
            if session.done:
                return
            session.muted = fetched.muted
            session.place(*fetched.start)
            for message in fetched.changes:
                if not session.take_change(message, encode_message(message), replayed=True):
                    break  # a hole in what was read: the next round reads from here again
            if fetched.truncated and announce_truncation:
                session.push(sse.frame("replay.truncated", {"missed_at_least": fetched.missed}), force=True)
            if session.end_replay() is not None:
                return
            stalled = stalled + 1 if session.cursor == after_cursor else 0
            if stalled >= STALLED_ROUNDS:
                # A live message numbered past what the store holds after several
                # reads is not a committed change: drop it rather than loop.
                logger.warning("dropping live messages the store does not have", extra={"cursor": session.cursor})
                session.pending.clear()
                session.resync = False
                session.replaying = False
                return
            after_cursor = session.cursor


def _for_user(message: ChannelMessage, user_id: str) -> ChannelMessage:
    """A broadcast as ``user_id``'s stream shows it."""
    if message.type != "notification":
        return message
    return replace(message, data={**message.data, "user_id": user_id}, wire=None)
