"""Stream-service fixtures: the service as a real uvicorn subprocess, tokens, publishing helpers."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devtools.cli import publish_event
from devtools.emulators import free_port
from functions.stream.config import load_stream_settings
from shared.config import Settings
from shared.tokens import mint_token
from tests.conftest import EmulatorPair
from tests.support.events import valid_event
from tests.support.processes import ROOT, ServerProcess, start_process
from tests.support.pubsub import PullSubscription
from tests.support.waiting import wait_for

SECRET = "stream-test-secret-0123456789abcdefghij"
INJECT_APP = "bench.inject_app:app"
HEARTBEAT = 1.0
BACKLOG = 8

# Short intervals so closing, limits and heartbeats are quick to observe.
BASE_ENV = {
    "JWT_SECRET": SECRET,
    "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    "SSE_MAX_BACKLOG_MESSAGES": str(BACKLOG),
    "SSE_MAX_CONNECTIONS_PER_USER": "3",
    "SSE_RETRY_MS": "1000",
    "BACKEND_TIMEOUT_SECONDS": "5",
    "LOG_LEVEL": "INFO",
    "DEMO_PAGE": "off",
    # Tests poll the history API many times a second while they wait for something;
    # the per-user rate limits have their own tests (test_rate_limits.py).
    "RATE_LIMIT_HISTORY_PER_MINUTE": "1000000",
    "RATE_LIMIT_CHANGES_PER_MINUTE": "1000000",
    "RATE_LIMIT_CONNECTS_PER_MINUTE": "1000000",
}


def start_stream_service(env: dict[str, str], port: int | None = None, app: str | None = None) -> ServerProcess:
    """The service with its production start command, ``python -m functions.stream.serve``.

    ``app`` serves a wrapper instead of the production app (``bench.inject_app:app``).
    """
    port = port or free_port()
    command = [sys.executable, "-m", "functions.stream.serve", "--host", "127.0.0.1", "--port", str(port)]
    if app is not None:
        command += ["--app", app]
    full_env = {**os.environ, **BASE_ENV, **env, "PYTHONPATH": str(ROOT)}
    server = start_process(command, full_env, port)
    wait_for(lambda: _healthy(server), 30, what="stream service health")
    return server


def _healthy(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/api/v1/notifications/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def token_for(user: str, ttl: float = 600, **extra: Any) -> str:
    return mint_token(user, load_stream_settings({"JWT_SECRET": SECRET}), ttl_seconds=ttl, extra=extra or None)


@pytest.fixture(scope="package")
def stream_server(emulators_session: EmulatorPair, settings: Settings) -> Iterator[ServerProcess]:
    server = start_stream_service(emulators_session.env())
    yield server
    server.stop()


@pytest.fixture
def new_user() -> Callable[[], str]:
    return lambda: f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def publish(settings: Settings, push_subscription: PullSubscription) -> Callable[..., str]:
    """Publish a content event for ``user`` to CONTENT_EVENTS_TOPIC (the ingest function stores it)."""

    def send(user: str, **overrides: Any) -> str:
        return publish_event(settings.project_id, settings.content_events_topic, valid_event(user, **overrides))

    return send


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_ids(server: ServerProcess, token: str) -> list[str]:
    """The user's notification ids, oldest first, through the history API."""
    response = httpx.get(f"{server.url}/api/v1/notifications", params={"limit": "100"}, headers=auth(token), timeout=10)
    response.raise_for_status()
    return sorted(n["id"] for n in response.json()["notifications"])


def wait_stored(server: ServerProcess, token: str, count: int, timeout: float = 30.0) -> list[str]:
    return wait_for(
        lambda: (lambda ids: ids if len(ids) >= count else None)(stored_ids(server, token)),
        timeout,
        what=f"{count} stored notifications",
    )
