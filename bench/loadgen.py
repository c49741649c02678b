"""The load generator: thousands of SSE streams held by one asyncio process.

Each stream is an ``asyncio.Protocol`` on a raw socket (no thread, no HTTP
library), so one process holds ~19,900 of them (the open-files hard limit).
It parses the HTTP response head, de-chunks the body when the server uses
chunked transfer encoding, splits SSE events and records, per stream, every
notification id seen: duplicates, what was expected but never came, and the
fan-out latency (receive time minus the time the publisher stamped, same clock).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

# Loopback has the whole 127/8; spreading the client side over several source
# addresses keeps 10,000 streams x several runs clear of the ephemeral-port
# range (TIME_WAIT after each run).
SOURCE_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(1, 9))


def raise_open_files_limit() -> int:
    """Soft limit of open files up to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def install_uvloop() -> None:
    """Run the load generator on uvloop, as the stream service runs: less of the shared cores per stream."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of seconds, in milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[max(0, min(n - 1, int(q / 100.0 * n + 0.5) - 1))] * 1000.0, 3)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(ordered[-1] * 1000.0, 3), "count": n}


@dataclass
class Stream:
    index: int
    user: str
    path: str
    started: float = 0.0
    connected_at: float | None = None  # response head (200) received
    status: int | None = None
    error: str | None = None
    closed: bool = False
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    events: int = 0  # every SSE event, heartbeats included
    heartbeats: int = 0
    closing_reason: str | None = None  # the reason of the stream.closing event, if one came


class StreamPool:
    """Opens and holds SSE streams, and collects what they receive."""

    def __init__(self, host: str, port: int, *, key_field: str = "id") -> None:
        self.host = host
        self.port = port
        self.key_field = key_field  # which field of a notification identifies it
        self.streams: list[Stream] = []
        self.by_user: dict[str, list[Stream]] = {}
        self.sent_at: dict[str, float] = {}  # key -> publisher's timestamp
        self.latencies: list[float] = []
        self.receive_times: list[float] = []  # parallel to latencies
        self.unknown = 0  # notifications whose key the publisher never sent
        self.misrouted = 0  # a notification of another user
        self.user_of_key: dict[str, str] = {}
        self._head_waiters: list[asyncio.Future[None]] = []
        self.first_receive: float | None = None
        self.last_receive: float | None = None
        self.receive_log: list[tuple[str, float]] = []  # (key, receive time) when record_receipts
        self.record_receipts = False

    # -- connecting -----------------------------------------------------------

    async def open(
        self, users: Sequence[str], path_for: Callable[[str], str], rate: float, head_timeout: float = 30.0
    ) -> None:
        """Open one stream per entry of ``users`` at ``rate`` per second; wait for every response head."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n, user in enumerate(users):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stream = Stream(len(self.streams), user, path_for(user))
            self.streams.append(stream)
            self.by_user.setdefault(user, []).append(stream)
            tasks.append(asyncio.ensure_future(self._connect(stream, head_timeout)))
        await asyncio.gather(*tasks)

    async def _connect(self, stream: Stream, head_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        head: asyncio.Future[None] = loop.create_future()
        request = (
            f"GET {stream.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode("ascii")
        stream.started = time.time()
        source = SOURCE_ADDRESSES[stream.index % len(SOURCE_ADDRESSES)]
        try:
            await loop.create_connection(
                lambda: SseProtocol(self, stream, request, head), self.host, self.port, local_addr=(source, 0)
            )
            await asyncio.wait_for(head, head_timeout)
        except (OSError, TimeoutError) as exc:
            stream.error = stream.error or f"{type(exc).__name__}: {exc}"[:200]

    # -- what arrives -----------------------------------------------------------

    def on_notification(self, stream: Stream, data: bytes, now: float) -> None:
        try:
            body = json.loads(data)
            key = str(body[self.key_field])
        except (ValueError, KeyError, TypeError):
            self.unknown += 1
            return
        if key in stream.seen:
            stream.duplicates += 1
            return
        stream.seen.add(key)
        sent = self.sent_at.get(key)
        if sent is None:
            self.unknown += 1
            return
        if self.user_of_key.get(key) != stream.user:
            self.misrouted += 1
        self.latencies.append(now - sent)
        self.receive_times.append(now)
        if self.first_receive is None:
            self.first_receive = now
        self.last_receive = now
        if self.record_receipts:
            self.receive_log.append((key, now))

    # -- accounting ---------------------------------------------------------------

    def established(self) -> list[Stream]:
        return [s for s in self.streams if s.status == 200 and s.error is None]

    def expected(self, per_user_keys: dict[str, list[str]]) -> int:
        return sum(len(per_user_keys.get(s.user, ())) for s in self.established())

    def lost(self, per_user_keys: dict[str, list[str]]) -> int:
        missing = 0
        for stream in self.established():
            keys = per_user_keys.get(stream.user, ())
            missing += sum(1 for k in keys if k not in stream.seen)
        return missing

    def delivered(self) -> int:
        return len(self.latencies)

    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.streams)

    def close(self) -> None:
        for protocol in list(SseProtocol.live.get(id(self), {}).values()):
            protocol.abort()


class SseProtocol(asyncio.Protocol):
    """One SSE stream: HTTP/1.1 response head, optional chunked body, events."""

    live: dict[int, dict[int, SseProtocol]] = {}

    def __init__(self, pool: StreamPool, stream: Stream, request: bytes, head: asyncio.Future[None]) -> None:
        self.pool = pool
        self.stream = stream
        self.request = request
        self.head = head
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.head_done = False
        self.chunked = False
        self.chunk_left = 0  # bytes of the current chunk still to come; -1 waiting for a size line
        self.raw = b""  # undecoded chunked bytes
        self.events = b""  # decoded body not yet split into events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        SseProtocol.live.setdefault(id(self.pool), {})[self.stream.index] = self
        self.transport.write(self.request)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.closed = True
        SseProtocol.live.get(id(self.pool), {}).pop(self.stream.index, None)
        if not self.head.done():
            self.stream.error = self.stream.error or "closed before the response head"
            self.head.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.head_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            self.buffer = b""
            self.head_done = True
            lines = head.split("\r\n")
            try:
                self.stream.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                self.stream.status = 0
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            self.chunk_left = -1
            self.stream.connected_at = now
            if self.stream.status != 200:
                self.stream.error = f"HTTP {self.stream.status}"
            if not self.head.done():
                self.head.set_result(None)
            if not data:
                return
        if self.chunked:
            data = self._dechunk(data)
        self._feed(data, now)

    def _dechunk(self, data: bytes) -> bytes:
        self.raw += data
        out = []
        while self.raw:
            if self.chunk_left < 0:
                end = self.raw.find(b"\r\n")
                if end < 0:
                    break
                size_text = self.raw[:end].split(b";")[0].strip()
                self.raw = self.raw[end + 2 :]
                if not size_text:
                    continue  # the CRLF that ends a chunk
                self.chunk_left = int(size_text, 16)
                if self.chunk_left == 0:
                    self.raw = b""
                    break
            take = self.raw[: self.chunk_left]
            out.append(take)
            self.raw = self.raw[len(take) :]
            self.chunk_left -= len(take)
            if self.chunk_left == 0:
                self.chunk_left = -1
        return b"".join(out)

    def _feed(self, data: bytes, now: float) -> None:
        self.events += data
        if b"\r" in self.events:
            self.events = self.events.replace(b"\r\n", b"\n")
        if b"\n\n" not in self.events:
            return
        *complete, self.events = self.events.split(b"\n\n")
        stream = self.stream
        for block in complete:
            if not block:
                continue
            event = b"message"
            data_lines = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
            if not data_lines and event == b"message":
                continue  # a comment or retry-only block
            stream.events += 1
            if event in (b"heartbeat", b"ping"):  # ours, nchan
                stream.heartbeats += 1
            elif event in (b"notification", b"message"):
                self.pool.on_notification(stream, b"\n".join(data_lines), now)
            elif event == b"stream.closing":
                try:
                    stream.closing_reason = str(json.loads(b"\n".join(data_lines))["reason"])
                except (ValueError, KeyError, TypeError):
                    stream.closing_reason = "unreadable"


class LoopLag:
    """How late the event loop wakes a 10 ms timer: the client's own saturation."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - before - self.interval))

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return summary_ms(self.samples)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Drained:
    """How the deliveries after a publish ended."""

    complete: bool  # every expected delivery arrived
    delivered: int  # how many had then
    at: float  # time.monotonic() of the last delivery seen (of the start, when none came)
    cpu: list[float]  # each server's CPU seconds, read when that delivery was seen


async def drain(
    delivered: Callable[[], int],
    expected: int,
    cpu: Callable[[], list[float]],
    timeout: float,
    quiet: float = 5.0,
    poll: float = 0.05,
) -> Drained:
    """Wait until every expected delivery arrived, or none has for ``quiet`` seconds, or ``timeout``.

    The CPU readings are the ones taken when the last delivery arrived: a delivery
    that never comes (a loss) must not bill the wait for it as CPU spent per
    delivery, which an end-of-wait reading did (30 s of idle streams, about a
    third more per delivery in the runs that lost one).
    """
    start = time.monotonic()
    last, last_at, last_cpu = delivered(), start, cpu()
    while True:
        now = time.monotonic()
        count = delivered()
        if count != last:
            last, last_at, last_cpu = count, now, cpu()
        if count >= expected:
            return Drained(True, count, last_at, last_cpu)
        if now - start >= timeout or now - last_at >= quiet:
            return Drained(False, last, last_at, last_cpu)
        await asyncio.sleep(poll)
