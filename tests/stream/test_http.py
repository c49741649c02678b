"""Pure HTTP behaviour of the stream service, in process on the memory backends (no emulator)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.errors import BackendUnavailable
from shared.tokens import mint_token
from tests.support.asgi import serving
from tests.support.sse import SSEParser

STREAM = "/api/v1/notifications/stream"
AUDIENCE, ISSUER = "notifications", "https://issuer.example"


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PRIVATE = _private_key()
OTHER_PRIVATE = _private_key()
PUBLIC_PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


pytestmark = pytest.mark.anyio


# Module-scoped, so that rs256_client can be: one event loop for the module's tests.
@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _memory() -> Backends:
    return Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())


# One service for the module: each lifespan collects the test process's whole heap (tune_gc), 0.2 s
# a time, and these tests only send requests, none of which changes what another one sees.
@pytest.fixture(scope="module")
async def rs256_client() -> AsyncIterator[httpx.AsyncClient]:
    settings = load_stream_settings(
        {
            "NOTIFICATIONS_BACKEND": "memory",
            "JWT_PUBLIC_KEY": PUBLIC_PEM,
            "STREAM_TICKET_SECRET": "stream-ticket-test-secret-0123456789abcdef",
            "JWT_AUDIENCE": AUDIENCE,
            "JWT_ISSUER": ISSUER,
            "CORS_ALLOWED_ORIGINS": "https://app.example",
            "DEMO_PAGE": "on",
        }
    )
    async with serving(create_app(settings, _memory())) as client:
        yield client


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "u1", "exp": int(time.time()) + 3600, "aud": AUDIENCE, "iss": ISSUER}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _rs256(key: rsa.RSAPrivateKey = PRIVATE, **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), key, algorithm="RS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key() -> str:
    """The classic confusion attack: HS256 signed with the RS256 public key as the HMAC secret."""
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(_claims()).encode())
    )
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none() -> str:
    return _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(_claims()).encode()) + "."


def _header_says(alg: str) -> str:
    """An RS256 signature under a header naming another algorithm (ES256 made PyJWT raise InvalidKeyError)."""
    signing_input = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + _b64(json.dumps(_claims()).encode())
    return f"{signing_input}.{_b64(RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), PRIVATE))}"


@pytest.mark.parametrize(
    ("credentials", "status", "code"),
    [
        (lambda: ({}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": "Basic dTE6cGFzcw=="}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": "Bearer"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": "Bearer not.a.jwt"}, {}), 401, "unauthorized"),
        (lambda: ({}, {"token": "garbage"}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(exp=int(time.time()) - 10)}"}, {}), 401, "token_expired"),
        (lambda: ({"Authorization": f"Bearer {_rs256(OTHER_PRIVATE)}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_alg_none()}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_hs256_with_public_key()}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(sub=None)}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_header_says('ES256')}"}, {}), 401, "unauthorized"),
        (lambda: ({}, {"token": _header_says("PS256")}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(sub=chr(0xD800))}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(exp=float('inf'))}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(aud='someone-else')}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(iss='https://evil.example')}"}, {}), 401, "unauthorized"),
        (lambda: ({"Authorization": f"Bearer {_rs256(type='refresh')}"}, {}), 403, "forbidden"),
        (lambda: ({}, {"token": _rs256(type="refresh")}), 403, "forbidden"),
    ],
    ids=[
        "missing",
        "basic-scheme",
        "empty-bearer",
        "malformed",
        "garbage-query-token",
        "expired",
        "wrong-key",
        "alg-none",
        "hs256-with-public-key",
        "no-sub",
        "es256-header-on-an-rsa-key",
        "ps256-header-in-query",
        "signed-lone-surrogate-sub",
        "signed-infinite-exp",
        "wrong-aud",
        "wrong-iss",
        "refresh",
        "refresh-in-query",
    ],
)
async def test_bad_credentials_get_a_json_error_and_no_stream(
    rs256_client: httpx.AsyncClient,
    credentials: Callable[[], tuple[dict[str, str], dict[str, str]]],
    status: int,
    code: str,
) -> None:
    headers, query = credentials()  # minted now: a long test run must not expire them
    response = await rs256_client.get(STREAM, headers=headers, params=query)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert "event:" not in response.text
    # The same credentials are refused by the history API.
    assert (await rs256_client.get("/api/v1/notifications", headers=headers, params=query)).status_code == status


async def test_a_valid_rs256_token_is_accepted(rs256_client: httpx.AsyncClient) -> None:
    response = await rs256_client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {_rs256()}"})
    assert response.status_code == 200
    assert response.json() == {"notifications": [], "unread_count": 0, "next_cursor": None, "stream_cursor": "0-0"}


async def test_a_bad_last_event_id_is_a_400(rs256_client: httpx.AsyncClient) -> None:
    for value in ("abc", "0" * 23, "G" * 24, "0" * 24 + "\n"):
        response = await rs256_client.get(
            STREAM, headers={"Authorization": f"Bearer {_rs256()}"}, params={"last_event_id": value}
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


async def test_unknown_paths_and_methods_are_json(rs256_client: httpx.AsyncClient) -> None:
    missing = await rs256_client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await rs256_client.post(STREAM)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    head = await rs256_client.head(STREAM, headers={"Authorization": f"Bearer {_rs256()}"})
    assert head.status_code == 405
    # The bench's injection route is in bench.inject_app only, never in the production app.
    assert (await rs256_client.post("/internal/bench/inject", json=[])).status_code == 404


async def test_cors_for_allowed_origins_only(rs256_client: httpx.AsyncClient) -> None:
    preflight = await rs256_client.options(
        STREAM,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,last-event-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    allowed = await rs256_client.get("/api/v1/notifications/health", headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = await rs256_client.get("/api/v1/notifications/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # The stream path skips the middleware stack and sets the headers itself.
    refused = await rs256_client.get(STREAM, headers={"Origin": "https://app.example"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"
    refused = await rs256_client.get(STREAM, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


async def test_health_metrics_and_browser_files(rs256_client: httpx.AsyncClient) -> None:
    health = await rs256_client.get("/api/v1/notifications/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    metrics = await rs256_client.get("/metrics")
    assert metrics.status_code == 200
    for name in ("sse_streams_open", "sse_connects_rejected_total", "sse_fanout_latency_seconds_bucket"):
        assert name in metrics.text
    client_js = await rs256_client.get("/api/v1/notifications/client.js")
    assert client_js.status_code == 200 and client_js.headers["content-type"].startswith("application/javascript")
    assert (await rs256_client.get("/demo")).status_code == 200
    assert (await rs256_client.get("/demo/static/demo.js")).status_code == 200
    assert (await rs256_client.get("/demo/static/missing.js")).json()["error"]["code"] == "not_found"


async def test_no_demo_page_when_it_is_off() -> None:
    settings = load_stream_settings(
        {"NOTIFICATIONS_BACKEND": "memory", "DEMO_PAGE": "off", "NOTIFICATIONS_LOCAL_MODE": "true"}
    )
    async with serving(create_app(settings, _memory())) as client:
        assert (await client.get("/demo")).status_code == 404
        assert (await client.get("/demo/static/demo.js")).status_code == 404
        assert (await client.get("/api/v1/notifications/client.js")).status_code == 200


async def test_unavailable_store_is_a_503_with_retry_after() -> None:
    class DownStore(MemoryStore):
        def page(self, *args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("down")

        def ping(self) -> None:
            raise BackendUnavailable("down")

    settings = load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "JWT_SECRET": "x" * 40})
    backends = Backends(DownStore(), MemoryChannel(), MemoryDeadLetters())
    async with serving(create_app(settings, backends)) as client:
        response = await client.get(
            "/api/v1/notifications", headers={"Authorization": f"Bearer {mint_token('u1', settings)}"}
        )
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["error"]["code"] == "unavailable"
        health = await client.get("/api/v1/notifications/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"


async def test_a_stream_ends_at_max_duration_with_stream_closing() -> None:
    settings = load_stream_settings(
        {
            "NOTIFICATIONS_BACKEND": "memory",
            "JWT_SECRET": "y" * 40,
            "SSE_MAX_STREAM_SECONDS": "1",
            "SSE_HEARTBEAT_INTERVAL": "0.3",
            "CORS_ALLOWED_ORIGINS": "https://app.example",
        }
    )
    async with serving(create_app(settings, _memory())) as client:
        # The in-process transport hands over the body once the stream has ended.
        response = await client.get(
            STREAM, params={"token": mint_token("u1", settings)}, headers={"Origin": "https://app.example"}
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = SSEParser().feed(response.content)
    assert events[0].event == "connection.established"
    assert events[-1].event == "stream.closing" and events[-1].json() == {"reason": "max_duration"}
    assert {e.event for e in events[1:-1]} == {"heartbeat"}


async def test_a_second_lifespan_on_the_same_app_object_streams_from_its_own_service() -> None:
    """An app object served twice (a restarted server in one process, the tests) streams from the running service.

    create_app used to keep the stream endpoint made for the first lifespan's service: after a second
    lifespan every stream answered 503 "shutting down" while health, which looked the service up afresh,
    said healthy.
    """
    settings = load_stream_settings(
        {"NOTIFICATIONS_BACKEND": "memory", "JWT_SECRET": "z" * 40, "SSE_MAX_STREAM_SECONDS": "1"}
    )
    app = create_app(settings, _memory())
    token = mint_token("u1", settings)
    for lifespan in ("first", "second"):
        async with serving(app) as client:
            health = await client.get("/api/v1/notifications/health")
            assert health.status_code == 200 and health.json()["status"] == "healthy", lifespan
            response = await client.get(STREAM, params={"token": token})
            assert response.status_code == 200, (lifespan, response.text)
            events = SSEParser().feed(response.content)
            assert events[0].event == "connection.established", lifespan
            assert events[-1].json() == {"reason": "max_duration"}, lifespan
