"""Startup, liveness and readiness probes: no backend call per probe; readiness turns false on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, cast

import httpx
import pytest

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from functions.stream.service import StreamService
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.channel import Channel
from shared.errors import BackendUnavailable
from shared.store import NotificationStore
from tests.support.asgi import serving
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for

pytestmark = pytest.mark.anyio
PREFIX = "/api/v1/notifications"
SETTINGS = load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Watched:
    """A backend whose every public call is counted; ``down`` makes its health check fail."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.down and name == "ping":
                raise BackendUnavailable("down")
            return attribute(*args, **kwargs)

        return call


async def test_probes_make_no_backend_call_and_ignore_a_backend_outage() -> None:
    store, channel = Watched(MemoryStore()), Watched(MemoryChannel())
    backends = Backends(cast(NotificationStore, store), cast(Channel, channel), MemoryDeadLetters())
    async with serving(create_app(SETTINGS, backends)) as client:
        store.calls.clear()
        channel.calls.clear()
        for _ in range(25):
            live = await client.get(f"{PREFIX}/live")
            ready = await client.get(f"{PREFIX}/ready")
            assert live.status_code == 200 and live.json() == {"status": "alive"}
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "streams": 0, "channel": "ok"}
            assert ready.headers["cache-control"] == "no-store"
        assert store.calls == [] and channel.calls == [], "a probe must cost no backend call"

        # The store is down: the health check says so, the probes do not (a restart would not help).
        store.down = True
        health = await client.get(f"{PREFIX}/health")
        assert health.status_code == 503 and health.json()["checks"]["store"].startswith("error")
        assert (await client.get(f"{PREFIX}/live")).status_code == 200
        assert (await client.get(f"{PREFIX}/ready")).status_code == 200


async def test_readiness_turns_false_on_sigterm_while_liveness_stays_true() -> None:
    app = create_app(SETTINGS, Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters()))
    async with serving(app) as client:
        service: StreamService = app.state.service
        assert (await client.get(f"{PREFIX}/ready")).status_code == 200
        # The service installed its SIGTERM handler (main thread): the signal Cloud Run sends.
        assert callable(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)

        # The handler hands over to the loop (call_soon_threadsafe): wait for the loop to run it.
        for _ in range(200):
            if service.hub is not None and service.hub.shutting_down:
                break
            await asyncio.sleep(0.01)
        ready = await client.get(f"{PREFIX}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert service.hub is not None and service.hub.shutting_down
        assert (await client.get(f"{PREFIX}/live")).json() == {"status": "alive"}


def test_the_real_server_answers_its_probes_with_streams_open() -> None:
    server = start_stream_service({"NOTIFICATIONS_BACKEND": "memory"})
    try:
        with EventStream(f"{server.url}{PREFIX}/stream", token=token_for("probe-user")) as stream:
            stream.wait_event("connection.established")
            live = httpx.get(f"{server.url}{PREFIX}/live", timeout=5)
            ready = httpx.get(f"{server.url}{PREFIX}/ready", timeout=5)
            assert live.status_code == 200
            assert ready.status_code == 200 and ready.json() == {"status": "ready", "streams": 1, "channel": "ok"}
    finally:
        server.stop()
