"""One open SSE stream: a bounded queue of encoded events and what it has sent.

Everything here runs on the event loop thread; the channel's thread hands
messages over through the hub. A stream's memory is bounded: at most
``queue_size`` events wait to be written (beyond that the client is too slow
and is cut off), at most ``recent_ids`` ids are remembered for de-duplication,
and at most ``queue_size`` live messages are buffered while a replay runs.
While the writer is blocked on a client that does not read, a full queue cuts
the stream off as a slow consumer; a burst larger than the queue that arrives
while the writer is idle is tolerated up to ``HARD_CAP_FACTOR`` times the size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from functions.stream import metrics, sse
from shared.channel import ChannelMessage
from shared.ids import is_valid_id

# Ids of the notifications sent recently on a stream. Ids from concurrent ingest
# instances may arrive slightly out of order, so "id <= last" is not a safe
# duplicate test; a bounded memory of exact ids is.
# At least twice the replay backlog (see the endpoint), so the overlap of a replay
# and the live messages buffered meanwhile is always inside the window. About
# 10 KiB for a busy stream, nothing for an idle one (filled as ids arrive).
RECENT_IDS = 256
# A queue may briefly hold this many times its size while its writer is not blocked.
HARD_CAP_FACTOR = 4


class RecentIds:
    """A bounded set of the most recent ids; allocates nothing until the first id."""

    __slots__ = ("_order", "_set", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._set: set[str] | None = None
        self._order: deque[str] | None = None

    def __contains__(self, item: str) -> bool:
        return self._set is not None and item in self._set

    def add(self, item: str) -> None:
        if self._set is None or self._order is None:
            self._set, self._order = set(), deque()
        if item in self._set:
            return
        self._set.add(item)
        self._order.append(item)
        if len(self._order) > self._size:
            self._set.discard(self._order.popleft())


class StreamSession:
    """The state of one stream; the endpoint writes what ``queue`` holds."""

    __slots__ = (
        "_abort",
        "_waiter",
        "_woken",
        "baseline_id",
        "closed_reason",
        "connection_id",
        "done",
        "forgotten",
        "heartbeat_slot",
        "last_id",
        "pending",
        "queue",
        "queue_size",
        "recent",
        "replaying",
        "resync",
        "sending",
        "slow",
        "user_id",
    )

    def __init__(
        self, user_id: str, connection_id: str, queue_size: int, baseline_id: str, recent_ids: int = RECENT_IDS
    ) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.queue_size = queue_size
        # A list and a bare future rather than a deque and an asyncio.Event:
        # ~2 KiB less per stream, which matters at 10,000 streams.
        self.queue: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self.recent = RecentIds(recent_ids)
        # Replay after a channel gap starts here: the newest id sent, else the connect time.
        self.baseline_id = baseline_id
        self.last_id: str | None = None
        # While a replay runs, live messages wait here and are merged after it.
        self.replaying = False
        self.pending: list[tuple[ChannelMessage, bytes]] = []
        self.resync = False
        self.done = False
        self.forgotten = False  # removed from the hub and the registry
        self.heartbeat_slot = 0
        self.slow = False
        # True while the endpoint waits for the transport to take a write: the
        # client is not reading fast enough, so a full queue means "too slow".
        self.sending = False
        self.closed_reason: str | None = None
        self._abort: Callable[[], None] | None = None

    @property
    def replay_from(self) -> str:
        return self.last_id or self.baseline_id

    def set_abort(self, abort: Callable[[], None]) -> None:
        self._abort = abort

    # Live messages (from the hub) ------------------------------------------------
    def offer(self, message: ChannelMessage, encoded: bytes) -> None:
        if self.done:
            return
        if self.replaying:
            if len(self.pending) >= self.queue_size:
                # Too much arrived during the replay: drop it and replay again afterwards.
                self.pending.clear()
                self.resync = True
            else:
                self.pending.append((message, encoded))
            return
        self.emit(message, encoded)

    def emit(self, message: ChannelMessage, encoded: bytes, *, replayed: bool = False) -> None:
        if message.type == "notification":
            notification_id = message.data.get("id")
            if not isinstance(notification_id, str) or not is_valid_id(notification_id):
                return
            if notification_id in self.recent:
                metrics.DUPLICATES_DROPPED.inc()
                return
            self.recent.add(notification_id)
            if self.last_id is None or notification_id > self.last_id:
                self.last_id = notification_id
            (metrics.NOTIFICATIONS_REPLAYED if replayed else metrics.NOTIFICATIONS_DELIVERED).inc()
        else:
            metrics.CHANGES_DELIVERED.inc()
        # A replay is bounded by the backlog, so it may exceed the live bound.
        self.push(encoded, force=replayed)

    def end_replay(self) -> list[tuple[ChannelMessage, bytes]] | None:
        """Finish a replay round: the buffered live messages, or None when another round is needed."""
        pending, self.pending = self.pending, []
        if self.resync:
            self.resync = False
            return None
        self.replaying = False
        for message, encoded in pending:
            self.emit(message, encoded)
        return pending

    # Queue -------------------------------------------------------------------------
    def push(self, encoded: bytes, *, force: bool = False) -> None:
        if self.done:
            return
        if not force and len(self.queue) >= self.queue_size:
            # A burst that arrives while the writer is idle is written at the next
            # loop turn; only a writer stuck behind the client (or a burst beyond
            # the hard cap) makes a full queue a slow consumer.
            if self.sending or len(self.queue) >= HARD_CAP_FACTOR * self.queue_size:
                self.cut_slow()
                return
        self.queue.append(encoded)
        self._wake()

    def heartbeat(self, encoded: bytes) -> None:
        # A heartbeat never cuts a stream off; if the queue is full the client
        # is already behind and the next real event decides.
        if not self.done and len(self.queue) < self.queue_size:
            self.queue.append(encoded)
            self._wake()

    def cut_slow(self) -> None:
        if self.done:
            return
        self.slow = True
        metrics.SLOW_CONSUMERS.inc()
        self.queue.clear()
        self.close("slow_consumer")
        if self._abort is not None:
            self._abort()

    def close(self, reason: str | None) -> None:
        """End the stream: ``reason`` is announced as stream.closing (None: the client left)."""
        if self.done:
            return
        self.done = True
        self.closed_reason = reason or "client_disconnected"
        self.pending.clear()
        if reason is not None:
            self.queue.append(sse.closing(reason))
        self._wake()

    def take(self) -> bytes:
        queue, self.queue = self.queue, []
        return b"".join(queue)

    def _wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something was queued (or the stream closed) since the last wait."""
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False
