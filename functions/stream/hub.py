"""The process's streams, by user, and the hand-over from the channel thread.

The channel calls ``receive`` on its own thread (a Pub/Sub callback thread, or
the bench injection hook's worker thread). Messages are appended to a list and
one ``call_soon_threadsafe`` per batch wakes the loop, which dispatches each
message to the streams of its user only, encoding it once for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from functions.stream import metrics, sse
from functions.stream.session import StreamSession
from shared.channel import ChannelMessage
from shared.errors import BackendUnavailable
from shared.notification import Notification
from shared.store import NotificationStore

logger = logging.getLogger(__name__)

# Messages waiting for the loop. Beyond this the loop is not keeping up: new
# messages are dropped and every stream replays from the store instead, so a
# burst can never grow the process's memory without bound.
INBOX_LIMIT = 50_000
# How many streams replay at once after a channel gap (each is one store query).
GAP_REPLAY_CONCURRENCY = 8
_GAP_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)


def encode_message(message: ChannelMessage) -> bytes:
    if message.type == "notification":
        notification_id = message.data.get("id")
        return sse.frame("notification", message.data, str(notification_id))
    return sse.frame(message.type, message.data)


def encode_notification(notification: Notification) -> tuple[ChannelMessage, bytes]:
    data = notification.to_dict()
    message = ChannelMessage(notification.user_id, "notification", data)
    return message, sse.frame("notification", data, notification.id)


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
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shutting_down = False
        self.count = 0

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
    def receive(self, message: ChannelMessage) -> None:
        """The channel's message handler; safe to call from any thread."""
        with self._inbox_lock:
            if len(self._inbox) >= INBOX_LIMIT:
                self._overflowed = True
                return
            first = not self._inbox
            self._inbox.append(message)
        if first:
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
        for message in batch:
            metrics.CHANNEL_MESSAGES.inc()
            latency = max(0.0, now - message.sent_at)
            metrics.FANOUT_LATENCY.observe(latency)
            metrics.FANOUT_WINDOW.add(latency)
            sessions = self._users.get(message.user_id)
            if not sessions:
                continue
            if message.data.get("user_id", message.user_id) != message.user_id:
                # Routing is by the message's user; a body naming someone else is never shown.
                logger.error("dropping a channel message whose data names another user")
                continue
            encoded = encode_message(message)
            for session in list(sessions):
                session.offer(message, encoded)
            metrics.DELIVERIES.observe(message, now)
        if overflowed:
            logger.error("channel inbox overflowed; streams replay from the store", extra={"limit": INBOX_LIMIT})
            self.replay_all()

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
        sessions = [s for s in self.sessions() if not s.done]
        logger.warning("channel gap: replaying open streams from the store", extra={"streams": len(sessions)})
        for session in sessions:
            if session.replaying:
                session.resync = True  # the running replay goes round again
                continue
            session.replaying = True
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
    async def fetch(self, user_id: str, after_id: str) -> tuple[list[Notification], int]:
        """Notifications after ``after_id``, oldest first, and how many were missed at least.

        When more than the backlog were missed, the newest ``backlog`` are
        returned: what is older is found through the history API, which pages
        newest first, so the client's view has no hole in the middle.
        """
        store, backlog = self._store, self._backlog
        found = await asyncio.to_thread(store.after, user_id, after_id, backlog + 1)
        if len(found) <= backlog:
            return found, len(found)
        page = await asyncio.to_thread(store.page, user_id, backlog)
        newest = sorted((n for n in page.notifications if n.id > after_id), key=lambda n: n.id)
        return newest, backlog + 1

    async def replay(self, session: StreamSession, after_id: str, *, announce_truncation: bool) -> None:
        """Send what ``session`` missed after ``after_id``, then what arrived live meanwhile.

        The session must already be registered (so nothing published during the
        query is missed) and in replay mode (so live messages wait and are merged
        by id afterwards).
        """
        while True:
            found, missed = await self.fetch(session.user_id, after_id)
            if session.done:
                return
            for notification in found:
                message, encoded = encode_notification(notification)
                session.emit(message, encoded, replayed=True)
            if missed > len(found) and announce_truncation:
                session.push(sse.frame("replay.truncated", {"missed_at_least": missed}), force=True)
            if session.end_replay() is not None:
                return
            after_id = session.replay_from
