"""How streams end: SIGTERM, a client that stops reading; and what the server's logs never contain."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1

from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import INJECT_APP, start_stream_service, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"
QUEUE = 16
PAYLOAD = 50_000


def _rss_bytes(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match
    return int(match.group(1)) * 1024


def _metric(client: httpx.Client, server: ManagedProcess, name: str) -> float:
    text = client.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def memory_server() -> Iterator[ManagedProcess]:
    """The service on the embedded backends with the bench injection hook, as the benchmark runs it."""
    server = start_stream_service(
        {"NOTIFICATIONS_BACKEND": "memory", "SSE_SEND_QUEUE_SIZE": str(QUEUE)}, app=INJECT_APP
    )
    yield server
    server.stop()


# One client for the module: a new httpx client loads the CA bundle, 60 ms, and these tests make 50 calls.
@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def _inject(client: httpx.Client, server: ManagedProcess, messages: list[dict[str, object]]) -> None:
    response = client.post(f"{server.url}/internal/bench/inject", json=messages)
    assert response.status_code == 200 and response.json() == {"accepted": len(messages)}


def _notification(user: str, number: int, size: int = 10) -> dict[str, object]:
    notification_id = f"{int(time.time() * 1e6):014x}{number:010x}"
    return {
        "user_id": user,
        "type": "notification",
        "data": {"id": notification_id, "user_id": user, "title": "x" * size},
        "sent_at": time.time(),
        "seq": number + 1,  # the change number (a new user's feed starts at 0)
    }


def test_a_client_that_stops_reading_is_cut_off_and_memory_stays_bounded(
    memory_server: ManagedProcess, client: httpx.Client, new_user: Callable[[], str]
) -> None:
    user = new_user()
    before_cuts = _metric(client, memory_server, "sse_slow_consumer_total")
    with EventStream(memory_server.url + STREAM, token=token_for(user)) as stream:
        stream.wait_event("connection.established")
        stream.pause()
        rss_before = _rss_bytes(memory_server.process.pid)
        injected = 0
        for batch in range(40):  # 40 x 20 x 50 kB = 40 MB offered to one stalled stream
            _inject(client, memory_server, [_notification(user, batch * 20 + i, PAYLOAD) for i in range(20)])
            injected += 20
        rss_after = _rss_bytes(memory_server.process.pid)
        assert _metric(client, memory_server, "sse_slow_consumer_total") == before_cuts + 1
        # What a stalled client can pin: its queue, one write and the socket buffers (kernel memory).
        assert rss_after - rss_before < 25 * 1024 * 1024, (rss_before, rss_after)
        stream.resume()
        closing = stream.wait_event("stream.closing", timeout=15)
        assert closing.json() == {"reason": "slow_consumer"}
        stream.wait_ended(5)
        received = stream.of_type("notification")
        assert 0 < len(received) < injected
        assert all(len(e.json()["title"]) == PAYLOAD for e in received)


def test_the_injection_hook_reaches_only_the_named_user(
    memory_server: ManagedProcess, client: httpx.Client, new_user: Callable[[], str]
) -> None:
    alice, bob = new_user(), new_user()
    with (
        EventStream(memory_server.url + STREAM, token=token_for(alice)) as mine,
        EventStream(memory_server.url + STREAM, token=token_for(bob)) as other,
    ):
        mine.wait_event("connection.established")
        other.wait_event("connection.established")
        message = _notification(alice, 0)
        _inject(client, memory_server, [message, message])  # a duplicate is sent once
        assert mine.wait_event("notification").json() == message["data"]
        other.wait_event("heartbeat")
        mine.wait_event("heartbeat")
        assert len(mine.of_type("notification")) == 1 and other.of_type("notification") == []
    bad = client.post(f"{memory_server.url}/internal/bench/inject", json=[{"user_id": alice}], timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def test_tokens_never_reach_the_logs(new_user: Callable[[], str]) -> None:
    server = start_stream_service({"NOTIFICATIONS_BACKEND": "memory"})
    token = token_for(new_user())
    try:
        with EventStream(server.url + STREAM, params={"token": token}) as stream:
            stream.wait_event("connection.established")
        httpx.get(f"{server.url}/api/v1/notifications", params={"token": token}, timeout=5)
        httpx.get(f"{server.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        httpx.get(f"{server.url}/api/v1/notifications", params={"token": "secret-opaque-value"}, timeout=5)
    finally:
        server.stop()
    log = server.log()
    assert "GET /api/v1/notifications/stream?token=[REDACTED]" in log  # the access log line exists
    assert token not in log and token.split(".")[2] not in log
    assert "secret-opaque-value" not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # every line of ours is Cloud Logging JSON


def test_sigterm_closes_every_stream_with_shutdown_and_deletes_the_subscription(
    emulators_session: EmulatorPair, settings: Settings, new_user: Callable[[], str]
) -> None:
    server = start_stream_service(emulators_session.env())
    instance_id = httpx.get(f"{server.url}/api/v1/notifications/health", timeout=5).json()["instance_id"]
    subscription = f"projects/{settings.project_id}/subscriptions/stream-instance-{instance_id}"
    subscriber = pubsub_v1.SubscriberClient()
    db = firestore.Client(project=settings.project_id)
    streams = [EventStream(server.url + STREAM, token=token_for(new_user())) for _ in range(3)]
    try:
        for stream in streams:
            stream.wait_event("connection.established")
        subscriber.get_subscription(subscription=subscription)  # exists while running
        assert db.collection("stream_instances").document(instance_id).get().exists
        server.stop(signal.SIGTERM, timeout=15)
        for stream in streams:
            assert stream.wait_event("stream.closing", timeout=5).json() == {"reason": "shutdown"}
            stream.wait_ended(5)
        with pytest.raises(gexc.NotFound):
            subscriber.get_subscription(subscription=subscription)
        assert not db.collection("stream_instances").document(instance_id).get().exists
        wait_for(lambda: "stream service stopped" in server.log(), 5, what="the shutdown log line")
    finally:
        for stream in streams:
            stream.close()
        subscriber.close()
        db.close()  # type: ignore[no-untyped-call]
        server.stop()
