"""Server-Sent Events for tests: a parser that follows the WHATWG rules, and clients over httpx.

The parser implements "Interpreting an event stream" of the HTML standard:
UTF-8 decoding (a leading BOM dropped), lines ended by CRLF, LF or CR (also
when the CR and LF arrive in different chunks), comments, ``field: value`` with
one optional space, ``data`` lines joined with LF, ``id`` kept across events
(ignored when it contains NUL), ``retry`` only when all digits, and an event
dispatched only at a blank line (an unfinished event at the end is dropped).

    with EventStream(url, token=token) as stream:
        stream.wait_for(lambda e: e.event == "notification")

``EventStream`` reads in a background thread so a test can wait with a
timeout, pause reading (to play a slow client) and close at any moment.
``iter_events`` / ``aiter_events`` parse any httpx streaming response.
"""

from __future__ import annotations

import codecs
import json
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    # The stream's last event id when this event was dispatched (what a browser
    # would send as Last-Event-ID); ``id_field`` is set only when this event had an ``id:`` line.
    last_event_id: str
    id_field: str | None = None
    retry: int | None = None

    @property
    def id(self) -> str | None:
        return self.id_field

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEParser:
    """Feed bytes in any chunking; get back the events completed so far."""

    last_event_id: str = ""
    retry: int | None = None
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _buffer: str = ""
    _started: bool = False
    _pending_cr: bool = False
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id_field: str | None = None
    _has_data: bool = False

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        return self._lines(text)

    def close(self) -> list[Event]:
        """End of stream: an unfinished event is dropped, as browsers do."""
        self._lines(self._decoder.decode(b"", final=True))
        return []

    def _lines(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        self._buffer += text
        start = 0
        buffer = self._buffer
        length = len(buffer)
        index = 0
        while index < length:
            char = buffer[index]
            if char == "\r" or char == "\n":
                line = buffer[start:index]
                if char == "\r":
                    if index + 1 < length:
                        if buffer[index + 1] == "\n":
                            index += 1
                    else:
                        self._pending_cr = True
                start = index + 1
                event = self._line(line)
                if event is not None:
                    events.append(event)
            index += 1
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
                self._id_field = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        event_type, data, id_field, has_data = self._event, self._data, self._id_field, self._has_data
        self._event, self._data, self._id_field, self._has_data = "", [], None, False
        if not has_data:
            return None
        return Event(event_type or "message", "\n".join(data), self.last_event_id, id_field, self.retry)


def iter_events(response: httpx.Response) -> Iterator[Event]:
    parser = SSEParser()
    for chunk in response.iter_raw():
        yield from parser.feed(chunk)
    parser.close()


async def aiter_events(response: httpx.Response) -> AsyncIterator[Event]:
    parser = SSEParser()
    async for chunk in response.aiter_raw():
        for event in parser.feed(chunk):
            yield event
    parser.close()


_END = object()


class EventStream:
    """An open stream read by a background thread; a non-200 answer is kept in ``status``/``error``."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        last_event_id: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            all_headers["Last-Event-ID"] = last_event_id
        self.events: list[Event] = []
        self.raw = bytearray()
        self.ended = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reading = threading.Event()
        self._reading.set()
        self._closing = False
        self._client = httpx.Client(timeout=httpx.Timeout(connect_timeout, read=None))
        request = self._client.build_request("GET", url, headers=all_headers, params=params)
        self._response = self._client.send(request, stream=True)
        self.status = self._response.status_code
        self.headers = self._response.headers
        self.error: Any = None
        if self.status != 200:
            body = self._response.read()
            try:
                self.error = json.loads(body)
            except ValueError:
                self.error = body.decode(errors="replace")
            self._response.close()
            self._client.close()
            self.ended.set()
            return
        self._thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)
        self._thread.start()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        parser = SSEParser()
        try:
            for chunk in self._response.iter_raw():
                self._reading.wait()
                self.raw.extend(chunk)
                for event in parser.feed(chunk):
                    self.events.append(event)
                    self._queue.put(event)
        except (httpx.HTTPError, OSError, ValueError, RuntimeError):
            pass  # closed by us or by the server
        finally:
            parser.close()
            self.ended.set()
            self._queue.put(_END)

    def pause(self) -> None:
        """Stop reading (the server's writes back up), as a stalled browser tab would."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def next(self, timeout: float = 10.0) -> Event:
        """The next event not yet taken; AssertionError on timeout or end of stream."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s; got {[e.event for e in self.events]}") from None
        if item is _END:
            self._queue.put(_END)
            raise AssertionError(f"stream ended; events: {[e.event for e in self.events]}")
        event: Event = item
        return event

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """Take events until one matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout} s; got {[e.event for e in self.events]}")
            event = self.next(remaining)
            if predicate(event):
                return event

    def wait_event(self, name: str, timeout: float = 10.0) -> Event:
        return self.wait_for(lambda e: e.event == name, timeout)

    def wait_ended(self, timeout: float = 10.0) -> None:
        if not self.ended.wait(timeout):
            raise AssertionError(f"stream still open after {timeout} s")

    def of_type(self, name: str) -> list[Event]:
        return [e for e in self.events if e.event == name]

    def close(self) -> None:
        """Drop the connection now (also while the reader thread is blocked in a read)."""
        if self._closing or self.status != 200:
            return
        self._closing = True
        self._reading.set()
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked reader
            except OSError:
                pass
        self.ended.wait(5)
        self._response.close()
        self._client.close()


def accepted(url: str, **options: Any) -> EventStream | None:
    """The stream if the server accepted it (200); None if it refused (that response is closed already)."""
    stream = EventStream(url, **options)
    return stream if stream.status == 200 else None


@dataclass
class Tally:
    """One client of one user: its current stream and the ones it had before reconnecting."""

    user: str
    stream: EventStream
    history: list[EventStream] = field(default_factory=list)

    def all_streams(self) -> list[EventStream]:
        return [*self.history, self.stream]

    def notifications(self) -> list[dict[str, Any]]:
        return [e.json() for s in self.all_streams() for e in s.of_type("notification")]

    def titles(self) -> list[str]:
        return [n["title"] for n in self.notifications()]


def assert_each_event_once_per_stream(tallies: list[Tally], expected: dict[str, list[str]], timeout: float) -> None:
    """Every stream of each user gets that user's events, each exactly once, and nobody else's."""
    from tests.support.waiting import wait_for

    for tally in tallies:

        def arrived(tally: Tally = tally) -> bool:
            return set(expected[tally.user]) <= set(tally.titles())

        wait_for(arrived, timeout, what=f"every event on {tally.user}'s stream")
    for tally in tallies:
        tally.stream.wait_event("heartbeat", timeout=10)  # a duplicate would have arrived by now
        tally.stream.wait_event("heartbeat", timeout=10)
    for tally in tallies:
        assert sorted(tally.titles()) == sorted(expected[tally.user]), "each event exactly once per stream"
        assert {n["user_id"] for n in tally.notifications()} == {tally.user}
