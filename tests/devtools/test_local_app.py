"""The development routes of devtools.local_app, and their absence from the production service."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.responses import PlainTextResponse

from devtools.local_app import LocalRoutes
from functions.stream.config import load_stream_settings
from shared.backends import Backends, build_backends, set_backends
from shared.tokens import mint_token

SETTINGS = load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"})


async def stream_stand_in(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("stream app", status_code=418)(scope, receive, send)


@pytest.fixture
def backends() -> Iterator[Backends]:
    backends = build_backends(SETTINGS)
    set_backends(backends)
    yield backends
    set_backends(None)


class Client:
    """Requests straight into an ASGI app (no server, no lifespan: only routing and handlers run)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
                return await client.request(method, path, **kwargs)

        # In a thread of its own: Playwright's sync API (browser tests in the same session) keeps an event
        # loop running on the main thread, where asyncio.run() is refused.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, call()).result(timeout=30)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def http() -> Client:
    return Client(LocalRoutes(stream_stand_in, SETTINGS))


def test_production_app_has_no_development_routes() -> None:
    from functions.stream.app import create_app

    client = Client(create_app(load_stream_settings({"DEMO_PAGE": "true", "NOTIFICATIONS_LOCAL_MODE": "true"})))
    for method, path in (("GET", "/demo/token"), ("POST", "/demo/publish"), ("GET", "/demo/local")):
        assert client.request(method, path).status_code in (404, 405), path


def test_other_paths_reach_the_stream_app(http: Client) -> None:
    assert http.get("/api/v1/notifications").status_code == 418
    assert http.get("/demo/token/x").status_code == 418


def test_token_endpoint_mints_verifiable_tokens(http: Client) -> None:
    answer = http.get("/demo/token", params={"user": "alice", "ttl": "60"}).json()
    claims = jwt.decode(answer["token"], SETTINGS.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60
    assert http.get("/demo/token", params={"user": "a/b"}).status_code == 400
    assert http.get("/demo/token", params={"ttl": "0"}).status_code == 400
    assert http.get("/demo/token", params={"ttl": "lots"}).status_code == 400


def test_publish_needs_a_token_and_a_valid_event(http: Client, backends: Backends) -> None:
    assert http.post("/demo/publish", json={"event_type": "system.update"}).status_code == 401
    headers = {"Authorization": f"Bearer {mint_token('bob', SETTINGS)}"}
    assert http.post("/demo/publish", headers=headers, content=b"{").status_code == 400
    assert http.post("/demo/publish", headers=headers, json={"event_type": "nope"}).status_code == 400
    answer = http.post("/demo/publish", headers=headers, json={"event_type": "system.update", "title": ""})
    assert answer.json()["outcome"] == "dead_lettered", "the ingest rules apply (empty title)"


def test_publish_with_embedded_backends_ingests_in_process(http: Client, backends: Backends) -> None:
    headers = {"Authorization": f"Bearer {mint_token('carol', SETTINGS)}"}
    event = {"event_type": "content_generation.progress", "title": "Rendering", "message": "half"}
    answer = http.post(
        "/demo/publish", headers=headers, json={**event, "content_request_id": "r1", "progress_percentage": 50}
    )
    assert answer.status_code == 200 and answer.json() == {"via": "inline ingest", "outcome": "stored"}
    stored = backends.store.page("carol", 10).notifications
    assert [(n.title, n.progress_percentage, n.content_request_id) for n in stored] == [("Rendering", 50, "r1")]
