"""The bound on a request's head (functions/stream/protocol.py), on the service as deployed."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.processes import ManagedProcess
from tests.support.stream import token_for

HISTORY = "/api/v1/notifications"
HEAD_BOUND = 64 * 1024  # the bound on a request line and headers that docs/stream.md states


@pytest.fixture
def service(memory_service: ManagedProcess) -> ManagedProcess:
    return memory_service


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _read_all(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_a_huge_header_is_refused_without_buffering_it(service: ManagedProcess) -> None:
    before = _rss_kib(service.process.pid)
    sent = 0
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(b"GET " + HISTORY.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 50 * 1024 * 1024:
                connection.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: what we want
        answer = _read_all(connection)
    assert sent < 50 * 1024 * 1024, "the server kept reading a 50 MiB header"
    assert answer.startswith(b"HTTP/1.1 431 ")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_header_too_large"
    assert _rss_kib(service.process.pid) - before < 20 * 1024


def _mark_read(padding: int, body: bytes) -> bytes:
    """A mark-read request whose head carries ``padding`` bytes of an extra header."""
    return (
        f"POST {HISTORY}/mark-read HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_for('u-proto')}\r\n"
        f"X-Padding: {'p' * padding}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def test_a_body_in_the_same_write_as_the_headers_does_not_count(service: ManagedProcess) -> None:
    body = json.dumps({"notification_ids": ["0" * 24] * 2000}).encode()  # ~55 KB
    head = _mark_read(30_000, body)
    assert len(head) < HEAD_BOUND < len(head) + len(body), "each under the bound, together over it"
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        connection.sendall(head + body)
        answer = _read_all(connection)
    # The app's own answer to 2,000 ids (it read the whole body), not the head bound's 431 nor a 500.
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "bad_request" and "at most" in error["message"], error

    # The control: the same request with its head alone over the bound is refused, so the bound was in force.
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        try:
            connection.sendall(_mark_read(HEAD_BOUND, body) + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the rest was in
        answer = _read_all(connection)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_keep_alive_requests_each_get_a_fresh_budget(service: ManagedProcess) -> None:
    request = (
        f"GET {HISTORY}?limit=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token_for('u-proto')}\r\n"
        f"X-Padding: {'p' * 40_000}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as connection:
        answers = b""
        for _ in range(3):  # 3 x 40 KB on one connection: over 64 KiB together, under it each
            connection.sendall(request)
            deadline = time.monotonic() + 10
            while answers.count(b"HTTP/1.1 200 ") < _ + 1 and time.monotonic() < deadline:
                answers += connection.recv(65536)
    assert answers.count(b"HTTP/1.1 200 ") == 3, answers[:300]
