"""Slow clients cannot hold connections: the head and body timeouts, on the service as deployed.

A client that sent one header byte every few seconds held its connection
forever; 500 of them exhausted the stream process's file descriptors and the
health check failed. The service is started with its production start command
(``python -m functions.stream.serve``) and a head timeout of 0.6 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for

# Short, so that the tests waiting for a cut-off are quick; the honest slow client below finishes its
# head in 0.2 s. Heartbeats as often: three of them span three head timeouts.
TIMEOUT = 0.6
SLOW_CLIENTS = 300
HISTORY = "/api/v1/notifications"


@pytest.fixture(scope="module")
def service() -> Iterator[ManagedProcess]:
    server = start_stream_service(
        {
            "NOTIFICATIONS_BACKEND": "memory",
            "HTTP_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
            "HTTP_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
            "SSE_HEARTBEAT_INTERVAL": str(TIMEOUT),
        }
    )
    yield server
    server.stop()


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _slow_head(port: int, gap: float) -> tuple[bytes, float]:
    """Send a request head one byte at a time, ``gap`` seconds apart, until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    head = f"GET {HISTORY} HTTP/1.1\r\nHost: x\r\nX-Slow: {'s' * 1000}\r\n\r\n".encode()
    answer = b""
    try:
        for index in range(len(head)):
            writer.write(head[index : index + 1])
            try:
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(65536), gap)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            break  # an answer, or the end of the connection
        if answer:
            # Then the server closes; a byte this client sent meanwhile makes that close a reset.
            with contextlib.suppress(ConnectionResetError):
                answer += await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    return answer, time.monotonic() - started


def test_hundreds_of_slow_heads_are_cut_off_and_free_their_descriptors(service: ManagedProcess) -> None:
    pid = service.process.pid
    before = _open_fds(pid)

    async def attack() -> tuple[list[tuple[bytes, float]], list[float]]:
        clients = asyncio.gather(*(_slow_head(service.port, 0.3) for _ in range(SLOW_CLIENTS)))
        health: list[float] = []
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:
            await asyncio.sleep(TIMEOUT / 2)  # the slow clients are connected and trickling
            for _ in range(3):
                started = time.monotonic()
                response = await client.get(f"{HISTORY}/health")
                assert response.status_code == 200
                health.append(time.monotonic() - started)
        return await asyncio.wait_for(clients, 60), health

    results, health = asyncio.run(attack())
    assert max(health) < 2.0, f"health check slowed to {max(health):.2f} s during the attack"
    for answer, took in results:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert took < TIMEOUT + 5, f"a slow head was held {took:.1f} s"
    wait_for(lambda: _open_fds(pid) <= before + 2, 10, what="the slow clients' descriptors to be released")


def test_a_silent_connection_is_closed_without_an_answer(service: ManagedProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT + 5) as connection:
        started = time.monotonic()
        assert connection.recv(1024) == b""
        assert time.monotonic() - started < TIMEOUT + 3


def test_a_head_in_pieces_within_the_timeout_is_served(service: ManagedProcess) -> None:
    token = token_for("u-slow")
    head = f"GET {HISTORY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        for piece in (head[:10], head[10:40], head[40:]):
            connection.sendall(piece.encode())
            time.sleep(0.1)  # a slow but honest client, well inside the timeout
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_later_request_on_a_kept_alive_connection_has_its_own_deadline(service: ManagedProcess) -> None:
    request = f"GET {HISTORY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_for('u-slow')}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(request)
        first = b""
        while b'"next_cursor"' not in first:  # the whole first answer, head and body
            first += connection.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        connection.sendall(b"GET ")  # the start of a second request, never finished
        started = time.monotonic()
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started < TIMEOUT + 3


def test_an_open_stream_outlives_the_head_timeout(service: ManagedProcess) -> None:
    with EventStream(f"{service.url}{HISTORY}/stream", token=token_for("u-slow-stream")) as stream:
        stream.wait_event("connection.established")
        for _ in range(3):  # heartbeats every TIMEOUT: three of them span 3 x the head timeout
            stream.wait_event("heartbeat", timeout=10)
        assert not stream.ended.is_set()


def test_a_slow_body_is_cut_off_with_a_408(service: ManagedProcess) -> None:
    body = json.dumps({"notification_ids": ["0" * 24]}).encode()
    head = (
        f"POST {HISTORY}/mark-read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_for('u-slow')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(head)
        started = time.monotonic()
        answer = b""
        connection.settimeout(0.3)
        for byte in body:
            try:
                connection.sendall(bytes([byte]))
                answer = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            break
        connection.settimeout(5)
        # The close after a byte sent meanwhile is a reset: keep what arrived before it (the answer's body
        # can come in a later read than its head).
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < TIMEOUT + 3
