"""Bad HTTP input to the stream service (a real uvicorn process): a clear 4xx, never a 500, never another user's data.

Where uvicorn's HTTP parser (httptools) refuses a request before the app sees
it - an unknown method, an invalid Content-Length, a request line over its
limit, bytes that are not HTTP - the answer is uvicorn's plain-text 400 and the
connection is closed; the tests assert that and that the process stays healthy.
Everything the app answers is ``{"error": {"code", "message"}}`` JSON.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.cli import publish_event
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import new_user, valid_event
from tests.support.processes import ManagedProcess
from tests.support.pubsub import PullSubscription
from tests.support.sse import EventStream
from tests.support.stream import auth, start_stream_service, token_for, wait_stored

PREFIX = "/api/v1/notifications"
STREAM = f"{PREFIX}/stream"
ALICE = "alice-http-input"


@pytest.fixture
def server(memory_service: ManagedProcess) -> ManagedProcess:
    return memory_service


# One client for the module: a new httpx client loads the CA bundle, 60 ms, more than most of these tests take.
@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as http:
        yield http


def _json_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code


def _healthy(server: ManagedProcess, client: httpx.Client) -> None:
    assert server.process.poll() is None, "the process died"
    assert client.get(f"{server.url}{PREFIX}/health").status_code == 200


def _raw(server: ManagedProcess, request: bytes) -> bytes:
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
def test_a_bad_body_is_a_400_json(server: ManagedProcess, client: httpx.Client, path: str, body: bytes) -> None:
    headers = {**auth(token_for(ALICE)), "Content-Type": "application/json"}
    response = client.post(f"{server.url}{PREFIX}/{path}", content=body, headers=headers)
    _json_error(response, 400, "bad_request")


BAD_PREFERENCES = [
    ("unknown type", b'{"muted_event_types": ["content_generation.exploded"]}', "content_generation.exploded"),
    ("not a list", b'{"muted_event_types": "content_generation.progress"}', "array"),
    ("not strings", b'{"muted_event_types": [1]}', "array"),
    ("unknown field", b'{"muted_event_types": [], "user_id": "bob"}', "user_id"),
    ("missing", b"{}", "array"),
    ("not an object", b'["content_generation.progress"]', None),
]


@pytest.mark.parametrize(
    ("body", "named"), [(b, n) for _, b, n in BAD_PREFERENCES], ids=[name for name, _, _ in BAD_PREFERENCES]
)
def test_bad_preferences_are_a_400_that_names_the_fault_and_change_nothing(
    server: ManagedProcess, client: httpx.Client, body: bytes, named: str | None
) -> None:
    user = f"prefs-{uuid.uuid4().hex[:8]}"
    headers = {**auth(token_for(user)), "Content-Type": "application/json"}
    url = f"{server.url}{PREFIX}/preferences"
    saved = client.put(url, json={"muted_event_types": ["content_generation.progress"]}, headers=headers)
    assert saved.status_code == 200, saved.text
    response = client.put(url, content=body, headers=headers)
    _json_error(response, 400, "bad_request")
    if named is not None:
        assert named in response.json()["error"]["message"]
    after = client.get(url, headers=headers)
    assert after.json() == {"muted_event_types": ["content_generation.progress"]}


def test_bodies_over_64_kib_are_413_with_or_without_a_content_length(
    server: ManagedProcess, client: httpx.Client
) -> None:
    headers = {**auth(token_for(ALICE)), "Content-Type": "application/json"}
    big = b'{"all": true, "pad": "' + b"x" * (64 * 1024) + b'"}'
    response = client.post(f"{server.url}{PREFIX}/mark-read", content=big, headers=headers)
    _json_error(response, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length to check up front
        for _ in range(100):
            yield b"x" * 8192

    response = client.post(f"{server.url}{PREFIX}/mark-read", content=chunks(), headers=headers)
    _json_error(response, 413, "payload_too_large")
    _healthy(server, client)


# -- paths and methods -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/api", f"{PREFIX}/stream/extra", f"{PREFIX}/a/b", "/demo", "/internal/bench/inject", "/%2e%2e/etc"],
)
def test_unknown_paths_are_404_json(server: ManagedProcess, client: httpx.Client, path: str) -> None:
    _json_error(client.get(server.url + path, headers=auth(token_for(ALICE))), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", STREAM, 405),
        ("PUT", STREAM, 405),
        ("PATCH", STREAM, 405),
        ("HEAD", STREAM, 405),
        ("GET", f"{PREFIX}/mark-read", 405),
        ("PUT", PREFIX, 405),
        ("POST", PREFIX, 405),
        ("GET", f"{PREFIX}/{'a' * 24}", 405),
        ("GET", f"{PREFIX}/streams", 405),  # the path of one notification, which only DELETE serves
        ("POST", f"{PREFIX}/health", 405),
        # DELETE /notifications/{id} matches: "stream" and "mark-unread" are not notification ids.
        ("DELETE", STREAM, 400),
        ("DELETE", f"{PREFIX}/mark-unread", 400),
    ],
)
def test_wrong_methods_are_a_4xx_json(
    server: ManagedProcess, client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, server.url + path, headers=auth(token_for(ALICE)))
    assert response.status_code == status
    if method != "HEAD":  # a HEAD answer has no body
        _json_error(response, status, "method_not_allowed" if status == 405 else "bad_request")


# -- Last-Event-ID -------------------------------------------------------------------------

GARBAGE_IDS = [
    "",
    "abc",
    "0",
    "-1",
    "a" * 23,
    "a" * 25,
    "A" * 24,
    "g" * 24,
    " " + "a" * 24,
    "a" * 24 + " ",
    "1e10",
    "null",
    "../" * 8,
    "a" * 10_000,
]


@pytest.mark.parametrize("value", GARBAGE_IDS, ids=[f"{v[:12]!r}" for v in GARBAGE_IDS])
def test_an_invalid_last_event_id_is_a_400_json(server: ManagedProcess, client: httpx.Client, value: str) -> None:
    token = token_for(ALICE)
    response = client.get(server.url + STREAM, params={"token": token, "last_event_id": value})
    _json_error(response, 400, "bad_request")
    if value.strip() == value:  # httpx refuses to send a header value with edge whitespace
        response = client.get(server.url + STREAM, headers={**auth(token), "Last-Event-ID": value})
        _json_error(response, 400, "bad_request")


def test_a_non_ascii_last_event_id_header_is_a_400_json(server: ManagedProcess) -> None:
    token = token_for(ALICE)
    request = (
        f"GET {STREAM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Last-Event-ID: \xe9\xe9\xff\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    answer = _raw(server, request)
    assert answer.startswith(b"HTTP/1.1 400") and b'"bad_request"' in answer


# -- what uvicorn refuses before the app, and sizes -----------------------------------------

PROTOCOL_GARBAGE = [
    ("unknown method", b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n"),
    (
        "invalid content-length",
        b"POST " + PREFIX.encode() + b"/mark-read HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    ),
    ("negative content-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
    ("NUL in the path", b"GET /api/\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n"),
]


@pytest.mark.parametrize("request_bytes", [r for _, r in PROTOCOL_GARBAGE], ids=[n for n, _ in PROTOCOL_GARBAGE])
def test_what_the_http_parser_refuses_is_a_clean_400_and_the_process_lives_on(
    server: ManagedProcess, client: httpx.Client, request_bytes: bytes
) -> None:
    answer = _raw(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"500" not in answer.split(b"\r\n", 1)[0]
    _healthy(server, client)


def test_a_long_query_string_the_app_sees_gets_json(server: ManagedProcess, client: httpx.Client) -> None:
    # Under the parser's request-line limit: the app answers, with JSON.
    junk = {f"p{n}": "v" * 100 for n in range(80)}  # ~9 KB of unknown parameters
    _json_error(client.get(server.url + STREAM, params=junk), 401, "unauthorized")
    response = client.get(server.url + PREFIX, params={**junk, "token": token_for(ALICE)})
    assert response.status_code == 200 and response.json()["notifications"] == []
    _json_error(client.get(server.url + PREFIX, params={"token": "x" * 20_000}), 401, "unauthorized")


def test_a_request_head_over_64_kib_is_a_431_json_error(server: ManagedProcess, client: httpx.Client) -> None:
    # httptools alone has no header-size limit; functions/stream/protocol.py bounds the head.
    response = client.get(server.url + PREFIX, headers={"Authorization": "Bearer " + "x" * 100_000})
    _json_error(response, 431, "request_header_too_large")
    many = {f"X-Header-{n}": "v" * 50 for n in range(1000)}  # ~66 KB of headers
    response = client.get(server.url + PREFIX, headers={**many, **auth(token_for(ALICE))})
    _json_error(response, 431, "request_header_too_large")
    answer = _raw(server, b"GET " + STREAM.encode() + b"?x=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"request_header_too_large" in answer
    _healthy(server, client)


def test_large_headers_under_the_bound_reach_the_app(server: ManagedProcess, client: httpx.Client) -> None:
    many = {f"X-Header-{n}": "v" * 50 for n in range(400)}  # ~26 KB
    response = client.get(server.url + PREFIX, headers={**many, **auth(token_for(ALICE))})
    assert response.status_code == 200
    response = client.get(server.url + PREFIX, headers={"Authorization": "Bearer " + "x" * 40_000})
    _json_error(response, 401, "unauthorized")
    _healthy(server, client)


# -- ids of another user, ids from the future (real store) ----------------------------------


def test_another_users_ids_and_future_ids_never_reveal_another_users_data(
    emulators_session: EmulatorPair, settings: Settings, push_subscription: PullSubscription
) -> None:
    service = start_stream_service(emulators_session.env())
    alice, bob = new_user("alice"), new_user("bob")
    alice_token, bob_token = token_for(alice), token_for(bob)

    def publish(user: str, title: str) -> None:
        publish_event(settings.project_id, settings.content_events_topic, valid_event(user, title=title))

    try:
        for n in range(3):
            publish(bob, f"bob-secret-{n}")
        bob_ids = wait_stored(service, bob_token, 3)
        publish(alice, "alice-0")
        alice_ids = wait_stored(service, alice_token, 1)

        # Bob's oldest id as Alice's Last-Event-ID: a notification id is a cursor of no feed now,
        # so the replay reads Alice's feed only, from its newest changes, and says it was truncated.
        with EventStream(service.url + STREAM, token=alice_token, last_event_id=bob_ids[0]) as stream:
            assert stream.status == 200
            stream.wait_event("connection.established")
            stream.wait_event("heartbeat")
            replayed = [e.json() for e in stream.of_type("notification")]
        assert stream.of_type("replay.truncated")
        assert {n["user_id"] for n in replayed} <= {alice}
        assert {n["id"] for n in replayed} <= set(alice_ids)
        assert not any("bob-secret" in e.data for e in stream.events)

        # A far-future id: nothing to replay, and live delivery still works.
        future = "f" * 24
        with EventStream(service.url + STREAM, token=alice_token, last_event_id=future) as stream:
            assert stream.status == 200
            stream.wait_event("connection.established")
            publish(alice, "alice-live")
            live = stream.wait_event("notification", timeout=30).json()
            assert live["title"] == "alice-live" and live["user_id"] == alice

        # The history API with Bob's ids and cursor, as Alice: nothing of Bob's is read or changed.
        url = service.url + PREFIX
        response = httpx.get(url, params={"cursor": bob_ids[-1], "limit": "100"}, headers=auth(alice_token))
        assert response.status_code == 200 and {n["user_id"] for n in response.json()["notifications"]} <= {alice}
        response = httpx.post(f"{url}/mark-read", json={"notification_ids": bob_ids}, headers=auth(alice_token))
        assert response.status_code == 200 and response.json() == {"updated": 0}
        _json_error(httpx.delete(f"{url}/{bob_ids[0]}", headers=auth(alice_token)), 404, "not_found")
        bobs = httpx.get(url, headers=auth(bob_token)).json()
        assert sorted(n["id"] for n in bobs["notifications"]) == bob_ids
        assert bobs["unread_count"] == 3, "Bob's notifications are untouched"
    finally:
        service.stop()
