"""uvicorn's httptools protocol with a bound on the size of a request's head.

httptools has no limit of its own: a client could send one header of hundreds of
megabytes and the process would buffer all of it before the app ever sees the
request (73 -> 315 MiB for a 200 MiB header, measured once by hand against plain
httptools; no command in the repository repeats it). This subclass answers 431
with the service's JSON error when a request line and headers pass
``MAX_REQUEST_HEAD_BYTES``, counted two ways: the bytes the parser hands over
(URL and headers), and the bytes received while the head is still incomplete
(what httptools buffers inside one header before any callback). The second check
runs after the parser took each chunk, so a body that arrives in the same chunk as
the end of the headers never counts against the head.

It also bounds the time a request's head may take: a client that sends one
header byte every few seconds held its connection (and a file descriptor)
forever, since uvicorn's only timer is the idle keep-alive one, which the first
byte of a request cancels; 500 such clients exhausted the process's file
descriptors. A head that is not complete ``header_timeout`` seconds after the
connection opened, or after the first byte of a later request on a keep-alive
connection, is answered 408 with the JSON error ``request_timeout`` and the
connection closed; a connection that never sent a byte is closed silently.
An open stream sends no more head, so it is never cut by this timer.

And it is lighter: an open stream keeps its connection's protocol for hours,
and uvicorn's carries three empty deques and, with this subclass's own state
added, an unshared attribute dict. Without them a connection holds about 2 KB
less (tests/stream/test_protocol_memory.py measures both protocols side by side).

``direct_writer(send)`` gives the stream endpoint a synchronous write of one
chunk of the response body, straight to uvicorn's transport with the framing
uvicorn's own send uses. It returns False when it cannot write (the response
has not started or has ended, or the client is not keeping up and writes are
paused). A stream's heartbeats and live events are then written from the loop
callback that produced them, with no task wake per event; whatever it declines
goes through ``send`` as before, which waits for the client. It is
uvicorn-specific by nature, and returns None for any other server's send.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

MAX_REQUEST_HEAD_BYTES = 64 * 1024
# Default of HTTP_HEADER_TIMEOUT_SECONDS: a browser or Google's front end sends a head in one go.
HEADER_TIMEOUT_SECONDS = 10.0


def _error_response(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


_TOO_LARGE = _error_response(
    b"431 Request Header Fields Too Large",
    "request_header_too_large",
    f"the request line and headers must be at most {MAX_REQUEST_HEAD_BYTES} bytes",
)


def _timeout_response(seconds: float) -> bytes:
    return _error_response(
        b"408 Request Timeout", "request_timeout", f"the request line and headers must arrive within {seconds:g} s"
    )


_T = TypeVar("_T")


class _LeanEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list: an empty deque is a 600-byte block.

    uvicorn gives every connection two events (its flow control's and its
    request cycle's) that a stream keeps for its whole life, and each rarely
    has a waiter. Event only appends, removes and iterates its waiters.
    """

    def __init__(self) -> None:
        # Not super().__init__(): that allocates the deque this class avoids.
        self._waiters = []  # type: ignore[assignment]
        self._value = False


class _Pipeline(list[_T]):
    """The two deque methods uvicorn's pipeline of requests uses, on a list (an empty deque is 600 bytes)."""

    def appendleft(self, item: _T) -> None:
        self.insert(0, item)


def direct_writer(send: Any) -> Callable[[bytes], bool] | None:
    """``send``'s synchronous body write, when ``send`` is uvicorn's httptools request cycle's own."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return None  # another server, or a wrapped send: the app uses send alone
    return functools.partial(_write_now, cycle)


def _write_now(cycle: RequestResponseCycle, body: bytes) -> bool:
    """Write one chunk of the cycle's response body if nothing stands in the way; else False."""
    if (
        not cycle.response_started
        or cycle.response_complete
        or cycle.disconnected
        or not cycle.chunked_encoding
        or cycle.flow.write_paused
        or cycle.transport.is_closing()
    ):
        return False
    try:
        # The framing uvicorn's send writes for a body chunk of a chunked response.
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
    except (OSError, RuntimeError):
        # The caller is a dispatch loop over many streams: one broken transport
        # must not end it. Declined, the event takes the task's path, whose
        # send() meets the same end and closes the stream.
        return False
    return True


class _HeadState:
    """Where the current request's head stands."""

    __slots__ = ("parsed", "pending", "received", "timer", "too_large")

    def __init__(self) -> None:
        self.pending = True
        self.received = 0  # bytes received while the head is incomplete
        self.parsed = 0  # bytes of request line and headers the parser handed over
        self.too_large = False
        self.timer: asyncio.TimerHandle | None = None


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into HttpParserError."""


def with_header_timeout(seconds: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with its own head deadline (uvicorn takes a class, not an instance)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"header_timeout": seconds})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, not five: uvicorn's protocol sets 27, and an instance
        # with more than 30 loses CPython's shared-key dict (3.11+), about
        # 1.3 KB more per connection, which every open stream holds.
        self._head = _HeadState()
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow._is_writable_event = _LeanEvent()
        self.flow._is_writable_event.set()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head.timer is None:
            self._head.timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head.timer is not None:
            self._head.timer.cancel()
            self._head.timer = None

    def _head_timed_out(self) -> None:
        self._head.timer = None
        if not self._head.pending or self.transport.is_closing():
            return
        if self._head.received:
            self.logger.warning("request head not complete after %g s; connection closed", self.header_timeout)
            self.transport.write(_timeout_response(self.header_timeout))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._head.pending:
            self._head.received += len(data)
            self._arm_head_timer()  # a later request on a keep-alive connection: its own deadline
        super().data_received(data)
        # One header can be buffered inside httptools before any callback sees it.
        if self._head.pending and self._head.received > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
            self._head.too_large = True
            self.send_400_response("")

    def on_message_begin(self) -> None:
        self._head.parsed = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head.parsed += size
        if self._head.parsed > MAX_REQUEST_HEAD_BYTES:
            self._head.too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._head.pending = False
        self._head.received = 0
        self._disarm_head_timer()
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:
            # Nothing has waited on or set it yet: the request's task only starts at the next loop turn.
            self.cycle.message_event = _LeanEvent()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head.pending = True  # the next request on this keep-alive connection

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error here; a head over the bound gets its own answer.
        if not self._head.too_large:
            super().send_400_response(msg)
            return
        self.logger.warning("request head over %d bytes refused", MAX_REQUEST_HEAD_BYTES)
        self.transport.write(_TOO_LARGE)
        self.transport.close()
