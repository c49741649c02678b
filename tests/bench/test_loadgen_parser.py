"""The load generator's HTTP/SSE parsing, fed byte streams split at every possible place."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.loadgen import SseProtocol, Stream, StreamPool


def _body(ids: list[str], crlf: bool) -> bytes:
    events = [b"retry: 3000\nevent: connection.established\ndata: {}\n\n", b": comment\n\n"]
    for key in ids:
        data = json.dumps({"id": key, "title": "t"}).encode()
        events.append(b"id: " + key.encode() + b"\nevent: notification\ndata: " + data + b"\n\n")
    events.append(b"event: heartbeat\ndata: {}\n\n")
    events.append(b"event: ping\n\n")  # nchan's heartbeat
    body = b"".join(events)
    return body.replace(b"\n", b"\r\n") if crlf else body


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)


def _run(response: bytes, step: int, ids: list[str]) -> tuple[StreamPool, Stream]:
    pool = StreamPool("127.0.0.1", 1)
    stream = Stream(0, "u1", "/")
    for key in ids:
        pool.sent_at[key] = 0.0
        pool.user_of_key[key] = "u1"
    loop = asyncio.new_event_loop()
    try:
        protocol = SseProtocol(pool, stream, b"", loop.create_future())
        for i in range(0, len(response), step):
            protocol.data_received(response[i : i + step])
    finally:
        loop.close()
    return pool, stream


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("crlf", [True, False])
@pytest.mark.parametrize("step", [1, 2, 7, 64, 100_000])
def test_every_notification_is_seen_once_however_the_bytes_are_split(chunked: bool, crlf: bool, step: int) -> None:
    ids = [f"{n:024x}" for n in range(5)] + ["000000000000000000000001"]  # the last one repeats
    body = _body(ids, crlf)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n"
    response = head + (_chunked(body, 13) if chunked else body)

    pool, stream = _run(response, step, ids)

    assert stream.status == 200
    assert stream.seen == set(ids)
    assert stream.duplicates == 1
    assert pool.delivered() == 5
    assert stream.heartbeats == 2
    assert pool.unknown == 0 and pool.misrouted == 0


def test_a_refused_stream_records_its_status() -> None:
    response = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"
    _, stream = _run(response, 5, [])
    assert stream.status == 429
    assert stream.error == "HTTP 429"
