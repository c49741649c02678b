"""A misconfigured backend is a 500 ``backend_misconfigured`` without Retry-After, not a 503 to wait out.

In process on the memory backends, with the real Google error classes raised
where Firestore would raise them, translated by shared.backends.google_errors.
"""
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import threading

import pytest
from google.api_core import exceptions as gexc

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from shared.backends import Backends
from shared.backends.google_errors import unavailable_on_error
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryRegistry, MemoryStore
from shared.feed import Change, FeedHead
from shared.store import Page
from shared.tokens import mint_token
from tests.support.asgi import serving

pytestmark = pytest.mark.anyio
SETTINGS = load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"})
TOKEN = mint_token("u1", SETTINGS)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "/api/v1/notifications"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _RefusingStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        with unavailable_on_error("page", "Firestore"):
            raise self.error

    def head(self, user_id: str, broadcast_seq: int | None = None) -> FeedHead:
        # Read first by the history (its stream_cursor) and by every stream's replay.
        with unavailable_on_error("feed head", "Firestore"):
            raise self.error

    def changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        with unavailable_on_error("replay", "Firestore"):
            raise self.error


class _RefusingRegistry(MemoryRegistry):
    def __init__(self, error: Exception) -> None:
        super().__init__("instance-1", 3, 30.0)
        self.error = error

    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        with unavailable_on_error("connect", "Firestore"):
            raise self.error


MISCONFIGURED = gexc.PermissionDenied("Missing or insufficient permissions.")
OUTAGE = gexc.ServiceUnavailable("connection refused")


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [(MISCONFIGURED, 500, "backend_misconfigured", None), (OUTAGE, 503, "unavailable", "5")],
    ids=["misconfigured", "outage"],
)
async def test_history_and_stream_tell_a_misconfiguration_from_an_outage(
    error: Exception, status: int, code: str, retry_after: str | None
) -> None:
    store_backends = Backends(_RefusingStore(error), MemoryChannel(), MemoryDeadLetters())
    async with serving(create_app(SETTINGS, store_backends)) as client:
        for response in (
            await client.get(PREFIX, headers=AUTH),
            # The replay of a reconnect reads the store.
            await client.get(f"{PREFIX}/stream", headers={**AUTH, "Last-Event-ID": "0" * 24}),
        ):
            assert response.status_code == status
            assert response.json()["error"]["code"] == code
            assert response.headers.get("retry-after") == retry_after
            assert "Permission" not in response.text, "what is missing goes to the log, not to the client"
    memory = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    async with serving(create_app(SETTINGS, memory, _RefusingRegistry(error))) as client:
        response = await client.get(f"{PREFIX}/stream", headers=AUTH)
        assert response.status_code == status and response.json()["error"]["code"] == code
        assert response.headers.get("retry-after") == retry_after
