"""One open SSE stream: a bounded queue of encoded events and its position in the feed.

Everything here runs on the event loop thread; the channel's thread hands
messages over through the hub. A stream's memory is bounded: at most
``queue_size`` events wait to be written (beyond that the client is too slow
and is cut off), and at most ``queue_size`` live messages are buffered while a replay runs.
While the writer is blocked on a client that does not read, a full queue cuts
the stream off as a slow consumer; a burst larger than the queue that arrives
while the writer is idle is tolerated up to ``HARD_CAP_FACTOR`` times the size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from functions.stream import metrics, sse
from shared.channel import ChannelMessage
from shared.ids import format_cursor, is_valid_id

# A queue may briefly hold this many times its size while its writer is not blocked.
HARD_CAP_FACTOR = 4


class StreamSession:
    """The state of one stream; the endpoint writes what ``queue`` holds.

    The stream's position is two change numbers: the last change of the user's
    feed and the last broadcast it has passed on (or skipped, when muted).
    Numbers are dense (shared/feed.py), so a live change numbered more than
    one past the position means one in between was committed but has not
    arrived (its publisher is slower, or lost it): the stream then replays from
    the store before it sends anything more, so it never skips a change and
    every ``id:`` it sends names a position with nothing missing before it.
    A change at or below the position is a repeat and is dropped.
    """

    __slots__ = (
        "_abort",
        "_waiter",
        "_woken",
        "baseline_id",
        "broadcast_seq",
        "closed_reason",
        "connection_id",
        "done",
        "forgotten",
        "heartbeat_slot",
        "muted",
        "pending",
        "queue",
        "queue_size",
        "replaying",
        "resync",
        "sending",
        "slow",
        "user_id",
        "user_seq",
        "write_now",
    )

    def __init__(self, user_id: str, connection_id: str, queue_size: int, baseline_id: str) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.queue_size = queue_size
        # A list and a bare future rather than a deque and an asyncio.Event:
        # ~2 KiB less per stream, which matters at 10,000 streams.
        self.queue: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        # The cursor the first replay starts from (the client's Last-Event-ID, or the feed's head).
        self.baseline_id = baseline_id
        # None until the first replay has placed the stream in the feed.
        self.user_seq: int | None = None
        self.broadcast_seq: int | None = None
        self.muted: frozenset[str] = frozenset()
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
        # Set by the endpoint once the response has started, when the server
        # offers it: writes an event at once (True) or declines (False).
        self.write_now: Callable[[bytes], bool] | None = None

    @property
    def cursor(self) -> str:
        """Where the stream stands: what a reconnect with this Last-Event-ID resumes after."""
        if self.user_seq is None or self.broadcast_seq is None:
            return self.baseline_id
        return format_cursor(self.user_seq, self.broadcast_seq)

    @property
    def replay_from(self) -> str:
        return self.cursor

    def place(self, user_seq: int, broadcast_seq: int) -> None:
        """Put the stream at a position (the first replay, or a jump past a truncation)."""
        self.user_seq, self.broadcast_seq = user_seq, broadcast_seq

    def set_abort(self, abort: Callable[[], None]) -> None:
        self._abort = abort

    # Live messages (from the hub) ------------------------------------------------
    def offer(self, message: ChannelMessage, tail: bytes) -> bool:
        """A live message; True when it revealed a gap and the stream must replay (it is now replaying)."""
        if self.done:
            return False
        if self.replaying:
            if len(self.pending) >= self.queue_size:
                # Too much arrived during the replay: drop it and replay again afterwards.
                self.pending.clear()
                self.resync = True
            else:
                self.pending.append((message, tail))
            return False
        if self.take_change(message, tail):
            return False
        self.replaying = True
        return True

    def take_change(self, message: ChannelMessage, tail: bytes, *, replayed: bool = False) -> bool:
        """Pass a change on if it is the next one; False when one before it is missing."""
        if message.seq is None:
            # Not numbered (the bench injection hook): passed on as it comes.
            self._send(message, tail, _legacy_id(message), replayed)
            return True
        if self.user_seq is None or self.broadcast_seq is None:
            return False
        position = self.broadcast_seq if message.broadcast else self.user_seq
        if message.seq <= position:
            metrics.DUPLICATES_DROPPED.inc()
            return True
        if message.seq > position + 1:
            return False
        if message.broadcast:
            self.broadcast_seq = message.seq
        else:
            self.user_seq = message.seq
        if message.type == "notification" and message.data.get("event_type") in self.muted:
            return True  # muted: the position moves on, nothing is sent
        self._send(message, tail, self.cursor, replayed)
        return True

    def _send(self, message: ChannelMessage, tail: bytes, event_id: str | None, replayed: bool) -> None:
        if message.type == "notification":
            (metrics.NOTIFICATIONS_REPLAYED if replayed else metrics.NOTIFICATIONS_DELIVERED).inc()
        else:
            metrics.CHANGES_DELIVERED.inc()
        head = b"" if event_id is None else b"id: " + event_id.encode("ascii") + b"\n"
        # A replay is bounded by the backlog, so it may exceed the live bound.
        self.push(head + tail, force=replayed)

    def end_replay(self) -> list[tuple[ChannelMessage, bytes]] | None:
        """Finish a replay round: the buffered live messages, or None when another round is needed."""
        pending, self.pending = self.pending, []
        if self.resync:
            self.resync = False
            return None
        for message, tail in pending:
            if not self.take_change(message, tail):
                # One before it is missing from what was replayed: go round again;
                # it and what follows are committed, so the next round reads them.
                return None
            if self.done:
                break
        self.replaying = False
        return pending

    # Queue -------------------------------------------------------------------------
    def push(self, encoded: bytes, *, force: bool = False) -> None:
        if self.done or self._wrote_now(encoded):
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
        if self.done or self._wrote_now(encoded):
            return
        if len(self.queue) < self.queue_size:
            self.queue.append(encoded)
            self._wake()

    def _wrote_now(self, encoded: bytes) -> bool:
        # Only with nothing queued and the writer idle, so events keep their order;
        # a write the server declines (the client is behind) is queued instead.
        write_now = self.write_now
        return write_now is not None and not self.queue and not self.sending and write_now(encoded)

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


def _legacy_id(message: ChannelMessage) -> str | None:
    notification_id = message.data.get("id") if message.type == "notification" else None
    return notification_id if isinstance(notification_id, str) and is_valid_id(notification_id) else None
