"""Firestore going away and coming back: 503 with Retry-After meanwhile, recovery without a restart."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from devtools import emulators as emulator_tools
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.sse import EventStream, accepted
from tests.support.stream import auth, start_stream_service, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"


def test_firestore_down_gives_503_and_the_service_recovers_by_itself(
    emulators_session: EmulatorPair,
    settings: Settings,
    private_firestore: emulator_tools.Emulator,
    new_user: Callable[[], str],
) -> None:
    firestore = private_firestore  # our own: stopping it disturbs no other test
    server = start_stream_service(
        {**emulators_session.env(), **firestore.env(), "BACKEND_TIMEOUT_SECONDS": "2"},
    )
    token = token_for(new_user())
    try:
        with EventStream(server.url + STREAM, token=token) as stream:
            assert stream.status == 200
        firestore.stop()

        refused = EventStream(server.url + STREAM, token=token)
        assert refused.status == 503 and refused.error["error"]["code"] == "unavailable"
        assert int(refused.headers["retry-after"]) > 0
        history = httpx.get(f"{server.url}/api/v1/notifications", headers=auth(token), timeout=30)
        assert history.status_code == 503 and history.headers["retry-after"]
        wait_for(
            lambda: httpx.get(f"{server.url}/api/v1/notifications/health", timeout=30).status_code == 503,
            15,
            what="health to report the store unavailable",
        )

        firestore.start()
        recovered = wait_for(
            lambda: accepted(server.url + STREAM, token=token),
            # gRPC's reconnect backoff decides how soon; ~10 s here, more on a loaded machine.
            90,
            interval=0.5,
            what="connects to succeed again",
        )
        recovered.wait_event("connection.established")
        recovered.close()
        assert httpx.get(f"{server.url}/api/v1/notifications", headers=auth(token), timeout=10).status_code == 200
    finally:
        server.stop()
