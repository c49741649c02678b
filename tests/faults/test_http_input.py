"""Bad HTTP input to the stream service (a real uvicorn process): a clear 4xx, never a 500, never another user's data.

Where uvicorn's HTTP parser (httptools) refuses a request before the app sees
it - an unknown method, an invalid Content-Length, a request line over its
limit, bytes that are not HTTP - the answer is uvicorn's plain-text 400 and the
connection is closed; the tests assert that and that the process stays healthy.
Everything the app answers is ``{"error": {"code", "message"}}`` JSON.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.stream.conftest import auth, start_stream_service, token_for
from tests.support.processes import ServerProcess

PREFIX = "/api/v1/notifications"
STREAM = f"{PREFIX}/stream"
ALICE = "alice-http-input"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_stream_service({"NOTIFICATIONS_BACKEND": "memory"})
    yield process
    process.stop()


def _json_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code


def _healthy(server: ServerProcess) -> None:
    assert server.process.poll() is None, "the process died"
    assert httpx.get(f"{server.url}{PREFIX}/health", timeout=10).status_code == 200


def _raw(server: ServerProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


# -- bodies of the history API ----------------------------------------------------------

BAD_BODIES = [
    ("empty", b""),
    ("truncated", b'{"notification_ids": ['),
    ("not utf-8", b'{"all": true, "x": "\xff\xfe"}'),
    ("array", b"[1, 2]"),
    ("string", b'"all"'),
    ("null", b"null"),
    ("NaN", b'{"notification_ids": NaN}'),
    ("all not true", b'{"all": 1}'),
    ("both", b'{"all": true, "notification_ids": []}'),
    ("ids not a list", b'{"notification_ids": "abc"}'),
    ("bad id", b'{"notification_ids": ["../../users/bob"]}'),
    ("unknown field", b'{"user_id": "bob", "all": true}'),
    ("too many ids", b'{"notification_ids": [' + b",".join([b'"' + b"a" * 24 + b'"'] * 501) + b"]}"),
    # Regression: 64 KiB of "[" nests deeper than Python's JSON decoder allows
    # (RecursionError), which used to escape as a 500.
    ("nested too deeply", b"[" * 30_000 + b"]" * 30_000),
    ("deep object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[name for name, _ in BAD_BODIES])
@pytest.mark.parametrize("path", ["mark-read", "mark-unread"])
def test_a_bad_body_is_a_400_json(server: ServerProcess, path: str, body: bytes) -> None:
    headers = {**auth(token_for(ALICE)), "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}{PREFIX}/{path}", content=body, headers=headers, timeout=10)
    _json_error(response, 400, "bad_request")


def test_bodies_over_64_kib_are_413_with_or_without_a_content_length(server: ServerProcess) -> None:
    headers = {**auth(token_for(ALICE)), "Content-Type": "application/json"}
    big = b'{"all": true, "pad": "' + b"x" * (64 * 1024) + b'"}'
    response = httpx.post(f"{server.url}{PREFIX}/mark-read", content=big, headers=headers, timeout=10)
    _json_error(response, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length to check up front
        for _ in range(100):
            yield b"x" * 8192

    response = httpx.post(f"{server.url}{PREFIX}/mark-read", content=chunks(), headers=headers, timeout=10)
    _json_error(response, 413, "payload_too_large")
    _healthy(server)
