"""A subscription's streaming pull, as a task on an event loop.

The stream service runs it on its own event loop, beside the streams it feeds.
On gRPC's synchronous API each response crossed three Python threads (gRPC's
channel-spin thread, a pull thread, then the loop), each waking the next and
taking the GIL from the loop that writes to the streams; on ``grpc.aio`` a
response wakes the loop once, and the messages are handed over where they are
used. Callers without a loop of their own get one on a daemon thread
(``LoopThread``).

Each response's messages are decoded and handed over as one batch and
acknowledged in the next request, gathered for ``ACK_GATHER_SECONDS``. There is
no lease management: a live channel acknowledges at once (what a stream misses
it recovers from Firestore).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.api_core import grpc_helpers_async
from google.pubsub_v1.types import StreamingPullRequest, StreamingPullResponse

logger = logging.getLogger(__name__)

_METHOD = "/google.pubsub.v1.Subscriber/StreamingPull"
# Raw protobuf both ways: proto-plus's constructor checks every ack id on its way
# in, and reading fields through its wrapper cost about 40 us per message.
_REQUEST = StreamingPullRequest.pb()
_RESPONSE = StreamingPullResponse.pb()
_HOST = "pubsub.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/pubsub")
# As google-cloud-pubsub's own channels: no message size limit; to Pub/Sub, a
# keepalive ping every 30 s. None to the emulator, as the library sends none
# there: its server (grpc-java's default) takes a ping only every 5 minutes and
# answers more with GOAWAY "too_many_pings", which ended both pulls every few
# minutes (found in CI: the messages in flight on the ended pull came again 10 s
# later, when their ack deadline ran out).
_MESSAGE_SIZE_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_CLOUD_OPTIONS = [*_MESSAGE_SIZE_OPTIONS, ("grpc.keepalive_time_ms", 30_000)]


def channel_options(emulator: bool) -> list[tuple[str, int]]:
    return list(_MESSAGE_SIZE_OPTIONS if emulator else _CLOUD_OPTIONS)


RESUBSCRIBE_BACKOFF = (0.5, 1.0, 2.0, 5.0)
# Real Pub/Sub closes a streaming pull that sends nothing for a while; an empty request keeps it open.
KEEPALIVE_SECONDS = 30.0
# How long acknowledgements wait for others to share their request. Each request
# costs the loop a completion from gRPC's poller thread and a timer: at 100 ms
# they cost one process about 9% of its CPU per delivery more than at 1 s
# (docs/benchmarks.md, "2026-12-01, 05:00"). The ack deadline (10 s) leaves ample
# room. A pull that breaks has its last second of messages redelivered: the
# streams drop numbered changes as repeats; a numberless one (the Redis-shaped
# publish) can show twice, as it could within 100 ms before.
ACK_GATHER_SECONDS = 1.0
MAX_ACKS_PER_REQUEST = 2500
ACK_DEADLINE_SECONDS = 10

# Called with one response's raw ``ReceivedMessage``s, on the loop.
Deliver = Callable[[Sequence[Any]], None]


def open_channel() -> grpc.aio.Channel:
    """A channel to Pub/Sub, or to the emulator that PUBSUB_EMULATOR_HOST names; call it on the loop that uses it."""
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        return grpc.aio.insecure_channel(emulator, options=channel_options(emulator=True))
    channel: grpc.aio.Channel = grpc_helpers_async.create_channel(
        f"{_HOST}:443", default_scopes=_SCOPES, default_host=_HOST, options=channel_options(emulator=False)
    )
    return channel


class PullStream:
    """One subscription's streaming pull, re-opened after any failure until ``closed`` is set or it is cancelled.

    ``ensure`` (blocking, run on the loop's executor) creates the subscription
    and what it needs, and returns True when it was missing: what was
    published meanwhile never reached it, so ``on_gap`` is called.
    """

    def __init__(
        self,
        path: str,
        deliver: Deliver,
        ensure: Callable[[], bool],
        on_gap: Callable[[], None],
        closed: threading.Event,
    ) -> None:
        self.path = path
        self._deliver = deliver
        self._ensure = ensure
        self._on_gap = on_gap
        self._closed = closed
        self.healthy = threading.Event()
        self._attempt = 0

    async def run(self, channel: grpc.aio.Channel) -> None:
        loop = asyncio.get_running_loop()
        client_id = uuid.uuid4().hex
        pull = channel.stream_stream(
            _METHOD, request_serializer=_REQUEST.SerializeToString, response_deserializer=_RESPONSE.FromString
        )
        while not self._closed.is_set():
            call = None
            try:
                if self._attempt and await loop.run_in_executor(None, self._ensure):
                    self._on_gap()
                call = pull()
                opening = _REQUEST(
                    subscription=self.path, stream_ack_deadline_seconds=ACK_DEADLINE_SECONDS, client_id=client_id
                )
                await call.write(opening)
                # Opened; a failure ends the receive below and clears this again.
                self.healthy.set()
                await self._receive(call)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-opened until closed, whatever ended it
                self.healthy.clear()
                if self._closed.is_set():
                    return
                delay = RESUBSCRIBE_BACKOFF[min(self._attempt, len(RESUBSCRIBE_BACKOFF) - 1)]
                self._attempt += 1
                logger.warning(
                    "channel pull ended; re-opening",
                    extra={"subscription": self.path, "error": repr(exc)[:300], "retry_in": delay},
                )
                await asyncio.sleep(delay)
            finally:
                self.healthy.clear()
                if call is not None:
                    call.cancel()

    async def _receive(self, call: Any) -> None:
        acks: list[str] = []
        pending = asyncio.Event()
        acknowledging = asyncio.ensure_future(self._acknowledge(call, acks, pending))
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise ConnectionError("streaming pull ended")
                self._attempt = 0
                received = response.received_messages
                if received:
                    self._deliver(received)
                    acks.extend([m.ack_id for m in received])
                    pending.set()
        finally:
            acknowledging.cancel()

    @staticmethod
    async def _acknowledge(call: Any, acks: list[str], pending: asyncio.Event) -> None:
        """Send what ``acks`` gathers, and an empty request when nothing went out for KEEPALIVE_SECONDS."""
        try:
            while True:
                try:
                    await asyncio.wait_for(pending.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await call.write(_REQUEST())
                    continue
                await asyncio.sleep(ACK_GATHER_SECONDS)
                pending.clear()
                while acks:
                    ids = acks[:MAX_ACKS_PER_REQUEST]
                    del acks[: len(ids)]
                    await call.write(_REQUEST(ack_ids=ids))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
            # The call ended; its reader re-opens the pull (and its messages come again, unacknowledged).
            return


class LoopThread:
    """An event loop on a daemon thread, for callers that have none to offer."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
