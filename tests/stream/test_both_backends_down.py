"""Firestore and Pub/Sub down at the same time, with streams open and a worker publishing.

Everything is real and private to this test: both emulators (stopped together
and restarted), the ingest function under functions-framework behind a push
subscription, the stream service as a process, and a worker whose publisher
retries. While both are down:

- open streams stay open and keep their heartbeats (they need no backend);
- the history API and new connects answer 503 JSON with ``Retry-After``, within
  a few seconds (``BACKEND_TIMEOUT_SECONDS`` is 3), never a 500 and never a hang;
- health answers 503 ``unavailable``;
- the worker's publishes fail and are retried by the worker.

When both are back (the emulators forget everything; the test recreates the
topics and the push subscription, which the real services would have kept):
every event the worker published during the outage is stored once and reaches
its user's open stream exactly once; events published afterwards arrive live;
new connects are accepted again.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from devtools import emulators as emulator_tools
from shared.backends.firestore_store import FirestoreStore
from shared.backends.pubsub_channel import ensure_topics
from tests.support.emulators import PROJECT
from tests.support.events import new_user
from tests.support.processes import ManagedProcess, start_function
from tests.support.pubsub import PullSubscription
from tests.support.sse import EventStream, Tally, assert_each_event_once_per_stream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for
from tests.support.worker import RetryingWorker

PREFIX = "/api/v1/notifications"
CONTENT = "content-generation-events"
DEAD_LETTER = "content-generation-events-dead-letter"
CHANNEL = "user-notifications"


def _push(ingest: ManagedProcess) -> PullSubscription:
    endpoint = f"{ingest.url}/projects/{PROJECT}/topics/{CONTENT}"
    return PullSubscription(PROJECT, CONTENT, push_endpoint=endpoint)


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_both_backends_down_streams_beat_apis_answer_503_and_nothing_is_lost(
    private_pubsub: emulator_tools.Emulator,
    private_firestore: emulator_tools.Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private_pubsub.address)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private_firestore.address)
    ensure_topics(PROJECT, [CONTENT, DEAD_LETTER, CHANNEL])
    env = {
        **private_pubsub.env(),
        **private_firestore.env(),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "BACKEND_TIMEOUT_SECONDS": "3",
    }
    with contextlib.ExitStack() as cleanup:
        ingest = start_function("functions/ingest/main.py", "ingest_content_event", env)
        cleanup.callback(ingest.stop)
        server = start_stream_service(env)
        cleanup.callback(server.stop)
        pushes = [_push(ingest)]
        cleanup.callback(lambda: pushes[-1].delete())
        worker = RetryingWorker(PROJECT, CONTENT)
        cleanup.callback(worker.close)
        store = FirestoreStore(PROJECT, timeout=3)
        cleanup.callback(store.close)
        alice, bob = new_user("alice"), new_user("bob")
        users = [alice, bob]
        expected: dict[str, list[str]] = {u: [] for u in users}
        tallies: list[Tally] = []

        def close_streams() -> None:
            for tally in tallies:
                tally.stream.close()

        cleanup.callback(close_streams)

        def stored(user: str) -> list[str]:
            try:
                return [n.title for n in store.page(user, 100).notifications]
            except Exception:  # the client may still be reconnecting
                return []

        def submit(label: str) -> None:
            for user in users:
                worker.submit(user, f"{label}-{user}")
                expected[user].append(f"{label}-{user}")

        for user in users:
            stream = EventStream(f"{server.url}{PREFIX}/stream", token=token_for(user))
            assert stream.status == 200
            stream.wait_event("connection.established")
            tallies.append(Tally(user, stream))
        submit("before")
        wait_for(lambda: all(len(stored(u)) == 1 for u in users), 30, what="the first events stored")
        for tally in tallies:
            tally.stream.wait_event("notification", timeout=20)

        private_firestore.stop()
        private_pubsub.stop()
        beats = {id(t): len(t.stream.of_type("heartbeat")) for t in tallies}
        submit("during-1")
        submit("during-2")

        token = token_for(alice)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for call in (
                lambda: client.get(PREFIX, headers={"Authorization": f"Bearer {token}"}),
                lambda: client.post(
                    f"{PREFIX}/mark-read", headers={"Authorization": f"Bearer {token}"}, json={"all": True}
                ),
                # A new connect needs the connection registry (Firestore).
                lambda: client.get(f"{PREFIX}/stream", headers={"Authorization": f"Bearer {token_for(new_user())}"}),
            ):
                response, took = _timed(call)
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "unavailable"
                assert response.headers["retry-after"] == "5"
                assert took < 15, f"a 503 took {took:.1f} s"
            health, _ = _timed(lambda: client.get(f"{PREFIX}/health"))
            assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
        wait_for(lambda: worker.failed_attempts >= 2, 30, what="the worker's publishes to fail")
        wait_for(
            lambda: all(len(t.stream.of_type("heartbeat")) >= beats[id(t)] + 2 for t in tallies),
            20,
            what="two heartbeats on every stream while both backends are down",
        )
        assert not any(t.stream.ended.is_set() for t in tallies), "a stream ended during the outage"

        # Back in the order an operator would see it; the worker holds until the topics and the
        # push subscription exist again (the emulator would drop a message published before).
        worker.hold()
        private_firestore.start()
        private_pubsub.start()
        ensure_topics(PROJECT, [CONTENT, DEAD_LETTER, CHANNEL])
        pushes[-1].delete()
        pushes.append(_push(ingest))
        worker.release()
        wait_for(worker.idle, 90, interval=0.2, what="the worker's retried publishes to go through")
        submit("after")

        try:
            wait_for(
                lambda: all(Counter(stored(u)) == Counter(expected[u][1:]) for u in users),
                120,
                interval=0.5,
                what="every event of the outage and after stored once (the restarted Firestore forgot the first)",
            )
        except AssertionError:
            raise AssertionError(f"stored {[stored(u) for u in users]}; ingest log:\n{ingest.log()[-3000:]}") from None

        def connects() -> bool:
            again = EventStream(f"{server.url}{PREFIX}/stream", token=token_for(new_user()))
            again.close()
            return again.status == 200

        wait_for(connects, 60, interval=1.0, what="new connects to be accepted again")
        # The restarted emulator forgot the connection registry and each feed's change log
        # (Google Cloud keeps both through an outage), so nothing routes to the streams
        # opened before it and their positions are past the renumbered feed: as a client
        # does when its stream goes quiet, each user reconnects, and from then on gets
        # every event exactly once.
        for tally in tallies:
            tally.stream.close()
        tallies = []
        for user in users:
            stream = EventStream(f"{server.url}{PREFIX}/stream", token=token_for(user))
            assert stream.status == 200
            stream.wait_event("connection.established")
            tallies.append(Tally(user, stream))
        for user in users:
            expected[user] = []
        submit("reconnected")
        assert_each_event_once_per_stream(tallies, expected, 90)
        assert "dead-lettered" not in ingest.log()
