"""The stream service for tests: started with its production command, tokens, the history API."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from devtools.emulators import free_port
from functions.stream.config import load_stream_settings
from shared.tokens import mint_token
from tests.support import ROOT
from tests.support.processes import ManagedProcess, start_server
from tests.support.sse import EventStream
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


def start_stream_service(env: dict[str, str], port: int | None = None, app: str | None = None) -> ManagedProcess:
    """The service with its production start command, ``python -m functions.stream.serve``.

    ``app`` serves a wrapper instead of the production app (``bench.inject_app:app``).
    """
    port = port or free_port()
    command = [sys.executable, "-m", "functions.stream.serve", "--host", "127.0.0.1", "--port", str(port)]
    if app is not None:
        command += ["--app", app]
    full_env = {**os.environ, **BASE_ENV, **env, "PYTHONPATH": str(ROOT)}
    server = start_server(command, full_env, port)
    # Listening is not enough: the channel subscription is made in the lifespan.
    server.wait_until(lambda: healthy(server.url), 30, what="stream service health")
    return server


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/notifications/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def token_for(user: str, ttl: float = 600, **extra: Any) -> str:
    return mint_token(user, load_stream_settings({"JWT_SECRET": SECRET}), ttl_seconds=ttl, extra=extra or None)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_ids(server: ManagedProcess, token: str) -> list[str]:
    """The user's notification ids, oldest first, through the history API."""
    response = httpx.get(f"{server.url}/api/v1/notifications", params={"limit": "100"}, headers=auth(token), timeout=10)
    response.raise_for_status()
    return sorted(n["id"] for n in response.json()["notifications"])


def wait_stored(server: ManagedProcess, token: str, count: int, timeout: float = 30.0) -> list[str]:
    def enough() -> list[str]:
        ids = stored_ids(server, token)
        return ids if len(ids) >= count else []

    return wait_for(enough, timeout, what=f"{count} stored notifications")


@dataclass(frozen=True)
class Attempt:
    """One connect, its start and end in seconds after a reference time."""

    started: float
    ended: float
    accepted: bool


def retry_until_accepted(
    connect: Callable[[], EventStream | None], since: datetime, timeout: float
) -> tuple[EventStream, list[Attempt]]:
    """Call ``connect`` every 0.1 s until it returns a stream; every attempt, timed from ``since``."""
    attempts: list[Attempt] = []

    def once() -> EventStream | None:
        started = (datetime.now(UTC) - since).total_seconds()
        stream = connect()
        attempts.append(Attempt(started, (datetime.now(UTC) - since).total_seconds(), stream is not None))
        return stream

    return wait_for(once, timeout, interval=0.1, what="a connect to be accepted"), attempts


def assert_freed_at(attempts: list[Attempt], cutoff: float) -> None:
    """Refused before ``cutoff``, accepted after it, as far as the attempts can tell without a clock margin.

    A refused connect was checked before the cutoff, so it started before it; the accepted one was checked
    after, so it ended after it. Connects every 0.1 s make a later cutoff show as a refusal started after
    ``cutoff``, an earlier one as an acceptance ended before it.
    """
    assert attempts and attempts[-1].accepted, attempts
    assert attempts[-1].ended >= cutoff, f"accepted before {cutoff} s: {attempts}"
    late = [a for a in attempts if not a.accepted and a.started >= cutoff]
    assert late == [], f"still refused after {cutoff} s: {late}"

