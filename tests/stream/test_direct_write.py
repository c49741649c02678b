"""Events written at once, without waking the stream's task (functions/stream/protocol.py, session.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from functions.stream.hub import HEAD
from functions.stream.protocol import direct_writer, with_header_timeout
from functions.stream.session import StreamSession
from tests.support.protocol_server import serving


class _Writer:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.written: list[bytes] = []

    def __call__(self, body: bytes) -> bool:
        if self.accept:
            self.written.append(body)
        return self.accept


def _session(writer: _Writer) -> StreamSession:
    session = StreamSession("u1", "c1", 4, HEAD)
    session.write_now = writer
    return session


def test_an_idle_stream_writes_at_once_and_queues_nothing() -> None:
    writer = _Writer()
    session = _session(writer)
    session.push(b"event: a\n\n")
    session.heartbeat(b"event: heartbeat\n\n")
    assert writer.written == [b"event: a\n\n", b"event: heartbeat\n\n"]
    assert session.take() == b""


def test_an_event_behind_queued_ones_or_a_busy_writer_is_queued_in_order() -> None:
    writer = _Writer()
    session = _session(writer)
    session.write_now = None  # before the response starts: the endpoint has not handed the writer over
    session.push(b"1", force=True)
    session.write_now = writer
    session.push(b"2")  # "1" still waits for the task: "2" must not overtake it
    assert writer.written == [] and session.take() == b"12"
    session.sending = True  # the task is in send(), waiting for the client
    session.push(b"3")
    session.heartbeat(b"h")
    assert writer.written == [] and session.take() == b"3h"


def test_a_declined_write_is_queued_and_wakes_the_writer() -> None:
    async def scenario() -> bytes:
        session = _session(_Writer(accept=False))
        waiting = asyncio.ensure_future(session.wait())
        await asyncio.sleep(0)
        session.push(b"x")
        await asyncio.wait_for(waiting, 5)
        return session.take()

    assert asyncio.run(scenario()) == b"x"


def test_a_closed_stream_writes_nothing_more() -> None:
    writer = _Writer()
    session = _session(writer)
    session.close(None)
    session.push(b"late")
    session.heartbeat(b"h")
    assert writer.written == []


async def _serve_once(protocol: type[HttpToolsProtocol], app: Any) -> bytes:
    async with serving(protocol, app) as (port, _), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    return response.content


def test_the_direct_write_is_a_chunk_of_the_response_only_while_it_is_open() -> None:
    answers: list[bool] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        write = direct_writer(send)
        assert write is not None
        answers.append(write(b"before the head"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        answers.append(write(b"one,"))
        await send({"type": "http.response.body", "body": b"two,", "more_body": True})
        answers.append(write(b"three"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        answers.append(write(b"after the end"))

    body = asyncio.run(_serve_once(with_header_timeout(10.0), app))
    assert body == b"one,two,three", "the direct writes and send's chunks form one chunked body, in order"
    assert answers == [False, True, True, False]


def test_another_servers_send_gets_no_direct_writer() -> None:
    async def send(message: Any) -> None:
        return None

    assert direct_writer(send) is None


def test_a_transport_that_refuses_the_write_declines_instead_of_raising() -> None:
    outcome: list[bool] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        write = direct_writer(send)
        assert write is not None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        transport = send.__self__.transport

        def broken(data: bytes) -> None:
            raise RuntimeError("unable to perform operation: the handler is closed")

        transport_write, transport.write = transport.write, broken
        try:
            outcome.append(write(b"lost"))
        finally:
            transport.write = transport_write
        await send({"type": "http.response.body", "body": b"end", "more_body": False})

    assert asyncio.run(_serve_once(with_header_timeout(10.0), app)) == b"end"
    assert outcome == [False]
