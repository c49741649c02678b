"""A stream process is SIGKILLed with clients on it.

The clients reconnect to a second process with their last event id and miss
nothing published meanwhile; the dead process's connections stop counting
against the per-user limit within two heartbeat intervals; and the cleanup
function, called over HTTP through functions-framework, removes the dead
instance's record, its connection entries and its Pub/Sub subscription while
leaving the live instance alone.

Everything runs in a project of this test's own on the session emulators, so
the cleanup run cannot touch what other tests hold.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore, pubsub_v1

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryDeadLetters
from shared.backends.pubsub_channel import PubSubChannel, ensure_topics, instance_subscription_id
from shared.config import Settings, load_settings
from tests.support.emulators import EmulatorPair
from tests.support.events import new_user, valid_event
from tests.support.processes import ManagedProcess, start_function
from tests.support.sse import Event, EventStream
from tests.support.stream import HEARTBEAT, assert_freed_at, retry_until_accepted, start_stream_service, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"
CONNECTION_TIMEOUT = 3  # SSE_CONNECTION_TIMEOUT of the cleanup run: the dead instance is stale after 3 s


@pytest.fixture
def project(emulators_session: EmulatorPair) -> Iterator[str]:
    name = f"crash-{uuid.uuid4().hex[:10]}"
    yield name


def _instance_id(server: ManagedProcess) -> str:
    return str(httpx.get(f"{server.url}/api/v1/notifications/health", timeout=10).json()["instance_id"])


def _notification_titled(title: str, event: Event) -> bool:
    return event.event == "notification" and event.json()["title"] == title


def _connect(server: ManagedProcess, token: str, last_id: str | None) -> EventStream | None:
    stream = EventStream(server.url + STREAM, token=token, last_event_id=last_id)
    if stream.status == 429:
        return None
    assert stream.status == 200, stream.error
    return stream


def test_clients_of_a_killed_process_resume_elsewhere_and_cleanup_removes_its_traces(
    emulators_session: EmulatorPair, settings: Settings, project: str
) -> None:
    ensure_topics(project, [settings.notifications_topic, settings.dead_letter_topic])
    env = {**emulators_session.env(), "GOOGLE_CLOUD_PROJECT": project}
    quick = load_settings({"GOOGLE_CLOUD_PROJECT": project, "BACKEND_TIMEOUT_SECONDS": "5"})
    channel = PubSubChannel(project, settings.notifications_topic, timeout=5)
    backends = Backends(FirestoreStore(project), channel, MemoryDeadLetters())
    db = firestore.Client(project=project)
    subscriber = pubsub_v1.SubscriberClient()

    def publish(user: str, label: str) -> None:
        event = valid_event(user, title=label)
        message = PubsubMessage(json.dumps(event).encode(), {}, f"m-{uuid.uuid4().hex}", datetime.now(UTC))
        assert ingest(message, backends, quick) is Outcome.STORED

    doomed = start_stream_service(env)
    survivor = start_stream_service(env)
    cleanup = start_function(
        "functions/cleanup/main.py",
        "cleanup",
        {**env, "SSE_CONNECTION_TIMEOUT": str(CONNECTION_TIMEOUT), "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT)},
        signature="http",
    )
    alice, bob, gone = new_user("alice"), new_user("bob"), new_user("gone")
    # Alice holds the per-user limit (3) on the doomed process; Gone never comes back.
    clients = [(alice, token_for(alice)) for _ in range(3)] + [(bob, token_for(bob)), (gone, token_for(gone))]
    streams: list[EventStream] = []
    resumed: list[EventStream] = []
    expected: dict[str, list[str]] = {alice: [], bob: [], gone: []}
    try:
        doomed_id, survivor_id = _instance_id(doomed), _instance_id(survivor)
        for _, token in clients:
            stream = EventStream(doomed.url + STREAM, token=token)
            assert stream.status == 200
            stream.wait_event("connection.established")
            streams.append(stream)
        for user in (alice, bob):
            publish(user, f"before-{user}")
            expected[user].append(f"before-{user}")
        for stream, (user, _) in zip(streams, clients, strict=True):
            if user != gone:
                stream.wait_event("notification", timeout=20)

        doomed.stop(signal.SIGKILL)
        for stream in streams:
            stream.wait_ended(10)
        doomed_record = db.collection("stream_instances").document(doomed_id).get().to_dict()
        assert doomed_record is not None
        heartbeat_at = doomed_record["heartbeat_at"]  # its last: it beats no more

        # Alice's first client retries at once: refused (429) while the dead instance's three entries count,
        # which is until its last heartbeat is two intervals old.
        first, attempts = retry_until_accepted(
            partial(_connect, survivor, clients[0][1], streams[0].events[-1].last_event_id), heartbeat_at, 30
        )
        resumed.append(first)
        assert_freed_at(attempts, 2 * HEARTBEAT)

        for number in range(3):
            for user in (alice, bob):
                publish(user, f"missed-{number}-{user}")
                expected[user].append(f"missed-{number}-{user}")

        # The other clients reconnect with the id of the last event they received, as EventSource does.
        for stream, (_, token) in zip(streams[1:4], clients[1:4], strict=True):
            last = stream.events[-1].last_event_id
            resumed.append(wait_for(partial(_connect, survivor, token, last), 30, interval=0.1, what="reconnect"))

        for user in (alice, bob):
            publish(user, f"after-{user}")
            expected[user].append(f"after-{user}")
        for old, new, (user, _) in zip(streams[:4], resumed, clients[:4], strict=True):
            new.wait_for(partial(_notification_titled, f"after-{user}"), 20)
            new.wait_event("heartbeat")
            titles = [e.json()["title"] for s in (old, new) for e in s.of_type("notification")]
            assert titles == expected[user], "nothing missed, nothing twice, in order"
            assert {e.json()["user_id"] for s in (old, new) for e in s.of_type("notification")} == {user}

        doomed_subscription = f"projects/{project}/subscriptions/{instance_subscription_id(doomed_id)}"
        survivor_subscription = f"projects/{project}/subscriptions/{instance_subscription_id(survivor_id)}"
        subscriber.get_subscription(request={"subscription": doomed_subscription})  # left behind by the crash
        assert db.collection("stream_instances").document(doomed_id).get().exists
        gone_live = db.collection("connections").document(gone).get().to_dict() or {}
        assert {e["instance"] for e in gone_live.get("live", {}).values()} == {doomed_id}

        wait_for(
            lambda: (datetime.now(UTC) - heartbeat_at).total_seconds() > CONNECTION_TIMEOUT + 0.5,
            CONNECTION_TIMEOUT + 5,
            what="the dead instance to be stale",
        )
        response = httpx.post(cleanup.url, json={"budget_seconds": 30}, timeout=60)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["complete"] is True and report["removed"]["instances"] == 1, report

        assert not db.collection("stream_instances").document(doomed_id).get().exists
        with pytest.raises(gexc.NotFound):
            subscriber.get_subscription(request={"subscription": doomed_subscription})
        assert not (db.collection("connections").document(gone).get().to_dict() or {}).get("live")
        for user in (alice, bob):
            live = (db.collection("connections").document(user).get().to_dict() or {}).get("live", {})
            assert {e["instance"] for e in live.values()} == {survivor_id}, "only the live instance's entries remain"
        assert db.collection("stream_instances").document(survivor_id).get().exists
        subscriber.get_subscription(request={"subscription": survivor_subscription})
    except AssertionError as exc:
        # A failure on a busy machine is hard to reproduce: keep what the processes said.
        tails = "\n".join(f"--- {n}:\n{p.log()[-3000:]}" for n, p in (("survivor", survivor), ("doomed", doomed)))
        raise AssertionError(f"{exc}\n{tails}") from exc
    finally:
        for stream in streams + resumed:
            stream.close()
        survivor.stop()
        doomed.stop(signal.SIGKILL)
        cleanup.stop()
        channel.close()
        subscriber.close()
