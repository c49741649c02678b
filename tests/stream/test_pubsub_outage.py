"""The Pub/Sub emulator is killed and restarted while streams are open and events keep coming.

Everything is real: a private Pub/Sub emulator (killed), the session Firestore,
the ingest function under functions-framework behind a push subscription, the
stream service as a uvicorn process, and a worker whose publisher retries.
The emulator forgets topics and subscriptions when it restarts; the real,
persistent Pub/Sub would still have them, so the test recreates the topics and
the push subscription (that is the only help it gives). The stream service
re-creates its own instance subscription by itself.

Proved: streams stay open and keep their heartbeats during the outage; the
instance re-establishes its subscription; every event published before, during
(retried by the worker) and after the outage reaches every stream of its user
exactly once - live, by the gap replay, or by replay on reconnect - and no
stream sees another user's notification.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
from google.cloud import pubsub_v1

from devtools import emulators as emulator_tools
from shared.backends.firestore_store import FirestoreStore
from shared.backends.pubsub_channel import ensure_topics
from shared.config import Settings
from tests.support.emulators import PROJECT, EmulatorPair
from tests.support.events import new_user
from tests.support.processes import ManagedProcess, start_function
from tests.support.pubsub import PullSubscription
from tests.support.sse import EventStream, Tally, assert_each_event_once_per_stream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for
from tests.support.worker import RetryingWorker

STREAM = "/api/v1/notifications/stream"
ROUNDS = 2  # events per user in each phase


def _topics(settings: Settings) -> list[str]:
    return [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic]


def _push(settings: Settings, ingest: ManagedProcess) -> PullSubscription:
    endpoint = f"{ingest.url}/projects/{PROJECT}/topics/{settings.content_events_topic}"
    return PullSubscription(PROJECT, settings.content_events_topic, push_endpoint=endpoint)


def test_streams_survive_a_pubsub_restart_and_every_event_arrives_once(
    emulators_session: EmulatorPair,
    settings: Settings,
    private_pubsub: emulator_tools.Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private_pubsub.address)
    ensure_topics(PROJECT, _topics(settings))
    env = {**emulators_session.env(), **private_pubsub.env(), "BACKEND_TIMEOUT_SECONDS": "3"}
    ingest = start_function("functions/ingest/main.py", "ingest_content_event", env)
    push = _push(settings, ingest)
    server = start_stream_service(env)
    worker = RetryingWorker(PROJECT, settings.content_events_topic)
    store = FirestoreStore(PROJECT)
    alice, bob, carol = new_user("alice"), new_user("bob"), new_user("carol")
    users = [alice, bob, carol]
    expected: dict[str, list[str]] = {u: [] for u in users}
    tallies: list[Tally] = []

    def stored(user: str) -> int:
        return len(store.page(user, 100).notifications)

    def all_stored(counts: dict[str, int]) -> bool:
        return all(stored(u) >= counts[u] for u in users)

    def phase(name: str, wait_each_round: bool) -> None:
        for round_number in range(ROUNDS):
            for user in users:
                label = f"{name}-{round_number}-{user}"
                worker.submit(user, label)
                expected[user].append(label)
            if wait_each_round:
                # One event per user in flight: ids of one user follow publishing order.
                counts = {u: len(expected[u]) for u in users}
                wait_for(partial(all_stored, counts), 30, what=f"{name} stored")

    try:
        for user, tabs in ((alice, 2), (bob, 1), (carol, 1)):
            for _ in range(tabs):
                stream = EventStream(server.url + STREAM, token=token_for(user))
                assert stream.status == 200
                stream.wait_event("connection.established")
                tallies.append(Tally(user, stream))
        carol_tally = tallies[-1]

        phase("before", wait_each_round=True)
        # Killed at once: the last events' channel messages may be lost with the emulator.
        private_pubsub.stop()

        beats = {id(t): len(t.stream.of_type("heartbeat")) for t in tallies}
        phase("during", wait_each_round=False)
        wait_for(lambda: worker.failed_attempts >= 3, 30, what="the worker's publishes to fail")
        wait_for(
            lambda: all(len(t.stream.of_type("heartbeat")) >= beats[id(t)] + 2 for t in tallies),
            20,
            what="two heartbeats on every stream during the outage",
        )
        assert not any(t.stream.ended.is_set() for t in tallies), "a stream ended during the outage"
        assert worker.published and len(worker.published) == ROUNDS * len(users), "nothing got through"
        carol_tally.stream.close()  # a client that leaves during the outage and comes back later
        carol_last = carol_tally.stream.events[-1].last_event_id or None

        # The restarted emulator has no topics or subscriptions; a message published before the
        # push subscription exists again would be dropped, which the real Pub/Sub never does.
        worker.hold()
        private_pubsub.start()
        ensure_topics(PROJECT, _topics(settings))
        push.delete()
        push = _push(settings, ingest)
        worker.release()

        wait_for(worker.idle, 60, interval=0.2, what="the worker's retried publishes to go through")
        phase("after", wait_each_round=False)
        try:
            wait_for(lambda: all(stored(u) >= len(expected[u]) for u in users), 60, what="every event stored")
        except AssertionError:
            counts = {u: (stored(u), len(expected[u])) for u in users}
            raise AssertionError(f"stored/expected {counts}; ingest log:\n{ingest.log()[-4000:]}") from None

        reconnected = EventStream(server.url + STREAM, token=token_for(carol), last_event_id=carol_last)
        assert reconnected.status == 200
        carol_tally.history.append(carol_tally.stream)
        carol_tally.stream = reconnected

        assert_each_event_once_per_stream(tallies, expected, timeout=60)
        for user in users:
            assert stored(user) == len(expected[user]), "stored exactly once"

        # The instance's two pulls (inbox, broadcasts) re-open independently, each on its own backoff, and
        # health is cached for 5 s: the inbox may carry every event while the broadcasts' pull is still
        # coming back (seen once under load), so both are awaited rather than read once.
        health: dict[str, Any] = {}

        def subscription_ok() -> bool:
            health.update(httpx.get(f"{server.url}/api/v1/notifications/health", timeout=10).json())
            return bool(health["checks"]["subscription"] == "ok")

        wait_for(subscription_ok, 30, interval=0.5, what="both of the instance's pulls back after the restart")
        subscriber = pubsub_v1.SubscriberClient()
        names = [s.name for s in subscriber.list_subscriptions(request={"project": f"projects/{PROJECT}"})]
        subscriber.close()
        assert any(name.endswith(f"stream-instance-{health['instance_id']}") for name in names)
        assert "dead-lettered" not in ingest.log()
    finally:
        for tally in tallies:
            tally.stream.close()
        worker.close()
        push.delete()
        server.stop()
        ingest.stop()
        store.close()
