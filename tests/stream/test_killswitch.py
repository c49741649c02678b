"""The kill switch on the stream service: new streams get a clear 503, open ones and the history stay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from ops import killswitch as killswitch_cli
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.backends.pubsub_channel import ensure_topics
from shared.killswitch import KillSwitch, MemorySwitchDocument
from tests.support.asgi import serving
from tests.support.emulators import EmulatorPair
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import auth, start_stream_service, token_for
from tests.support.waiting import wait_for

PREFIX = "/api/v1/notifications"
STREAM = f"{PREFIX}/stream"
ORIGIN = "https://app.example"


class CountingDocument(MemorySwitchDocument):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self) -> Mapping[str, Any] | None:
        self.reads += 1
        return super().read()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_new_stream_is_refused_with_a_clear_503_while_switched_off() -> None:
    document = CountingDocument()
    document.write({"streams_enabled": False, "reason": "incident 42"})
    backends = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters(), killswitch=KillSwitch(document, ttl=60))
    settings = load_stream_settings(
        {
            "NOTIFICATIONS_BACKEND": "memory",
            "NOTIFICATIONS_LOCAL_MODE": "true",
            "JWT_SECRET": "stream-test-secret-0123456789abcdefghij",
            "CORS_ALLOWED_ORIGINS": ORIGIN,
            # Twenty connects in a row: the connect rate limit has its own tests.
            "RATE_LIMIT_CONNECTS_PER_MINUTE": "1000000",
        }
    )
    token = token_for("u1")
    async with serving(create_app(settings, backends)) as client:
        for _ in range(20):
            response = await client.get(STREAM, headers={**auth(token), "Origin": ORIGIN})
            assert response.status_code == 503
            assert response.json() == {
                "error": {
                    "code": "notifications_disabled",
                    "message": "notifications are switched off by the operators: incident 42",
                }
            }
            assert response.headers["retry-after"] == "60"
            assert response.headers["access-control-allow-origin"] == ORIGIN, "the browser can read why"
        assert document.reads == 1, "the switch is cached, not read per connect"
        # Without a valid token the answer stays 401: the switch tells nothing to strangers.
        assert (await client.get(STREAM)).status_code == 401
        # History, health and the probes are not switched off.
        assert (await client.get(PREFIX, headers=auth(token))).status_code == 200
        assert (await client.get(f"{PREFIX}/ready")).status_code == 200


# On the emulators: the real service, its own project so no other test sees the switch.


@pytest.fixture
def switched_server(emulators: EmulatorPair) -> Iterator[tuple[ManagedProcess, str]]:
    project = f"killswitch-{uuid.uuid4().hex[:8]}"
    ensure_topics(project, ["user-notifications"])
    server = start_stream_service(
        {**emulators.env(), "GOOGLE_CLOUD_PROJECT": project, "KILLSWITCH_CACHE_SECONDS": "0.2"}
    )
    yield server, project
    server.stop()


def _answered(server: ManagedProcess, token: str, status: int) -> EventStream | None:
    """A new stream if it was answered ``status``; otherwise it is closed and None."""
    stream = EventStream(server.url + STREAM, token=token)
    if stream.status == status:
        return stream
    stream.close()
    return None


def test_the_switch_applies_without_a_redeploy_and_spares_open_streams(
    switched_server: tuple[ManagedProcess, str],
) -> None:
    server, project = switched_server
    token = token_for(f"user-{uuid.uuid4().hex[:8]}")
    with EventStream(server.url + STREAM, token=token) as open_before:
        open_before.wait_event("connection.established")

        assert killswitch_cli.main(["--project", project, "off", "--only", "streams", "--reason", "drill"]) == 0
        refused = wait_for(lambda: _answered(server, token, 503), 10, what="new streams to be refused")
        assert refused is not None
        assert refused.error["error"]["code"] == "notifications_disabled"
        assert refused.error["error"]["message"].endswith(": drill")
        assert int(refused.headers["retry-after"]) > 0
        assert httpx.get(server.url + PREFIX, headers=auth(token), timeout=10).status_code == 200

        # The stream opened before the switch keeps its heartbeats.
        open_before.wait_event("heartbeat")
        open_before.wait_event("heartbeat")
        assert open_before.of_type("stream.closing") == []

        assert killswitch_cli.main(["--project", project, "on"]) == 0
        reopened = wait_for(lambda: _answered(server, token, 200), 10, what="new streams to be accepted again")
        assert reopened is not None
        with reopened:
            reopened.wait_event("connection.established")
    assert "kill switch changed" in server.log()
