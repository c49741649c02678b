"""The cleanup function against the Firestore and Pub/Sub emulators.

Every test works in a Firestore/Pub/Sub project of its own, so the counts it
asserts are exact whatever other tests left in the shared emulators.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.cloud import firestore, pubsub_v1

from devtools.emulators import free_port
from functions.cleanup import run as run_module
from functions.cleanup.context import Budget, CleanupReport
from functions.cleanup.registry_pass import SIGHTINGS
from functions.cleanup.run import run_cleanup
from shared.backends.firestore_registry import connections_document
from shared.backends.pubsub_channel import (
    broadcast_subscription_id,
    ensure_topics,
    instance_subscription_id,
    instance_topic_id,
)
from shared.config import Settings, load_settings
from tests.support.emulators import EmulatorPair
from tests.support.processes import start_function

TIMEOUT = 300  # SSE_CONNECTION_TIMEOUT of these tests (the default)


@dataclass
class World:
    """One test's private project on the emulators, with helpers to seed it."""

    project: str
    settings: Settings
    db: Any
    subscriber: Any
    publisher: Any
    now: datetime

    def env(self) -> dict[str, str]:
        return {"GOOGLE_CLOUD_PROJECT": self.project, "SSE_CONNECTION_TIMEOUT": str(TIMEOUT)}

    def ago(self, seconds: float) -> datetime:
        return self.now - timedelta(seconds=seconds)

    def subscription(self, instance_id: str) -> str:
        """What a stream instance creates at start: its inbox topic, a subscription on it, one on broadcasts."""
        inbox = f"projects/{self.project}/topics/{instance_topic_id(instance_id)}"
        self.publisher.create_topic(name=inbox)
        path = f"projects/{self.project}/subscriptions/{instance_subscription_id(instance_id)}"
        self.subscriber.create_subscription(request={"name": path, "topic": inbox})
        self.subscriber.create_subscription(
            request={
                "name": f"projects/{self.project}/subscriptions/{broadcast_subscription_id(instance_id)}",
                "topic": f"projects/{self.project}/topics/{self.settings.notifications_topic}",
            }
        )
        return path

    def topics(self) -> set[str]:
        return {
            t.name.rsplit("/", 1)[-1]
            for t in self.publisher.list_topics(request={"project": f"projects/{self.project}"})
            if t.name.rsplit("/", 1)[-1] != self.settings.notifications_topic
        }

    def instance(self, instance_id: str, heartbeat_age: float) -> str:
        path = self.subscription(instance_id)
        self.db.collection("stream_instances").document(instance_id).set(
            {
                "heartbeat_at": self.ago(heartbeat_age),
                "started_at": self.ago(heartbeat_age + 60),
                "subscription": path,
                "expire_at": self.ago(heartbeat_age) + timedelta(days=1),
            }
        )
        return path

    def connections(self, user_id: str, entries: dict[str, tuple[str, float]], updated_age: float = 0) -> None:
        live = {cid: {"instance": inst, "opened_at": self.ago(age)} for cid, (inst, age) in entries.items()}
        self.db.collection("connections").document(user_id).set(connections_document(live, self.ago(updated_age)))

    def notification(self, user_id: str, expired: bool) -> None:
        expire_at = self.ago(3600) if expired else self.now + timedelta(days=30)
        user = self.db.collection("users").document(user_id)
        doc_id = uuid.uuid4().hex[:24]
        user.collection("notifications").document(doc_id).set({"id": doc_id, "expire_at": expire_at, "read": False})
        user.collection("event_keys").document(uuid.uuid4().hex).set(
            {"notification_id": doc_id, "expire_at": expire_at}
        )

    def live_entries(self, user_id: str) -> dict[str, Any] | None:
        snapshot = self.db.collection("connections").document(user_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def subscriptions(self) -> set[str]:
        return {
            s.name.rsplit("/", 1)[-1]
            for s in self.subscriber.list_subscriptions(request={"project": f"projects/{self.project}"})
        }

    def count(self, group: str) -> int:
        return len(list(self.db.collection_group(group).select([]).stream()))

    def run(self, budget: float = 30.0, **kwargs: Any) -> CleanupReport:
        return run_cleanup(self.db, self.subscriber, self.settings, budget, publisher=self.publisher, **kwargs)


@pytest.fixture
def world(emulators: EmulatorPair) -> Iterator[World]:
    project = f"cleanup-{uuid.uuid4().hex[:10]}"
    settings = load_settings({**os.environ, "GOOGLE_CLOUD_PROJECT": project, "SSE_CONNECTION_TIMEOUT": str(TIMEOUT)})
    ensure_topics(project, [settings.notifications_topic])
    with closing(firestore.Client(project=project)) as db, pubsub_v1.SubscriberClient() as subscriber:
        publisher = pubsub_v1.PublisherClient()
        yield World(project, settings, db, subscriber, publisher, datetime.now(UTC))
        publisher.stop()


def seed_mixed(world: World) -> None:
    """Stale and fresh of every kind; the comments say what must survive."""
    world.instance("fresh-1", heartbeat_age=10)  # stays, with its subscription
    world.instance("stale-1", heartbeat_age=TIMEOUT * 3)  # goes, with its subscription
    world.connections("u1", {"c1": ("fresh-1", 5000), "c2": ("stale-1", 900)})  # c2 goes
    world.connections("u2", {"c3": ("stale-1", 900)})  # the whole document goes
    # Idle document: c4's instance vanished long ago (goes); c5's instance is just starting (stays).
    world.connections("u3", {"c4": ("vanished", 900), "c5": ("starting", 5)}, updated_age=900)
    world.connections("u4", {"c6": ("fresh-1", 900)}, updated_age=900)  # live, stays
    for _ in range(3):
        world.notification("u1", expired=True)
    for _ in range(2):
        world.notification("u1", expired=False)
    world.subscription("orphan-old")  # no instance document, seen missing long ago: goes
    world.db.collection(SIGHTINGS).document(instance_subscription_id("orphan-old")).set(
        {"missing_since": world.ago(TIMEOUT * 2), "subscription": "x", "expire_at": world.now + timedelta(days=1)}
    )
    world.subscription("orphan-new")  # no instance document yet, never seen: stays this run


def test_only_stale_old_and_orphan_things_go(world: World) -> None:
    seed_mixed(world)

    report = world.run()

    assert report.complete is True
    # Two subscriptions and an inbox topic for each of stale-1 and orphan-old.
    assert report.removed == {
        "instances": 1,
        "connections": 3,
        "notifications": 3,
        "event_keys": 3,
        "subscriptions": 4,
        "topics": 2,
    }
    instances = {s.id for s in world.db.collection("stream_instances").stream()}
    assert instances == {"fresh-1"}
    u1 = world.live_entries("u1")
    assert u1 is not None and set(u1["live"]) == {"c1"} and u1["instances"] == ["fresh-1"]
    assert world.live_entries("u2") is None
    u3 = world.live_entries("u3")
    assert u3 is not None and set(u3["live"]) == {"c5"} and u3["instances"] == ["starting"]
    u4 = world.live_entries("u4")
    assert u4 is not None and set(u4["live"]) == {"c6"}
    assert world.count("notifications") == 2 and world.count("event_keys") == 2
    kept = ("fresh-1", "orphan-new")
    assert world.subscriptions() == {f(i) for i in kept for f in (instance_subscription_id, broadcast_subscription_id)}
    assert world.topics() == {instance_topic_id(i) for i in kept}
    # The new orphan is now remembered as missing, not deleted.
    sighting = world.db.collection(SIGHTINGS).document(instance_subscription_id("orphan-new")).get()
    assert sighting.exists and sighting.get("missing_since") >= world.now - timedelta(seconds=1)

    again = world.run()
    assert again.complete is True
    assert sum(again.removed.values()) == 0, "a second run finds nothing left to remove"

    # Once seen missing for longer than the timeout, the orphan goes (a later run's clock).
    later = world.run(now=datetime.now(UTC) + timedelta(seconds=TIMEOUT + 5))
    assert later.removed["subscriptions"] >= 2  # orphan-new, and fresh-1's (stale by then)
    assert instance_subscription_id("orphan-new") not in world.subscriptions()


def test_an_instance_starting_without_its_document_keeps_its_subscription_until_the_grace_ends(world: World) -> None:
    world.subscription("booting")
    assert world.run().removed["subscriptions"] == 0
    # It writes its document within the grace period: the sighting is dropped, the subscription kept.
    world.db.collection("stream_instances").document("booting").set({"heartbeat_at": datetime.now(UTC)})
    assert world.run(now=datetime.now(UTC) + timedelta(seconds=10)).removed["subscriptions"] == 0
    assert not world.db.collection(SIGHTINGS).document(instance_subscription_id("booting")).get().exists
    assert instance_subscription_id("booting") in world.subscriptions()


def test_a_zero_budget_returns_a_valid_report_and_deletes_nothing(world: World) -> None:
    seed_mixed(world)

    report = world.run(budget=0)

    body = json.loads(json.dumps(report.to_dict()))
    assert body["complete"] is False
    assert body["removed"] == dict.fromkeys(
        ("instances", "connections", "notifications", "event_keys", "subscriptions", "topics"), 0
    )
    assert isinstance(body["elapsed_seconds"], float)
    assert world.count("notifications") == 5
    assert {s.id for s in world.db.collection("stream_instances").stream()} == {"fresh-1", "stale-1"}
    assert set((world.live_entries("u1") or {})["live"]) == {"c1", "c2"}


def test_two_concurrent_runs_both_succeed_and_remove_each_thing_once(world: World) -> None:
    stale = [f"stale-{i}" for i in range(12)]
    for instance_id in stale:
        world.instance(instance_id, heartbeat_age=TIMEOUT * 2)
    for user in range(20):
        world.connections(f"user-{user}", {f"c{user}-{k}": (stale[(user + k) % len(stale)], 900) for k in range(2)})
    for _ in range(120):
        world.notification(f"user-{uuid.uuid4().hex[:4]}", expired=True)

    reports: list[CleanupReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(world.run(budget=60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == [] and len(reports) == 2
    assert all(r.complete for r in reports)
    total = {key: sum(r.removed[key] for r in reports) for key in reports[0].removed}
    assert total == {
        "instances": 12,
        "connections": 40,
        "notifications": 120,
        "event_keys": 120,
        "subscriptions": 24,
        "topics": 12,
    }
    assert list(world.db.collection("stream_instances").stream()) == []
    assert list(world.db.collection("connections").stream()) == []
    assert world.subscriptions() == set() and world.topics() == set()


def test_the_function_over_http_reports_counts_and_logs_the_trace(world: World, emulators: EmulatorPair) -> None:
    seed_mixed(world)
    server = start_function(
        "functions/cleanup/main.py", "cleanup", {**emulators.env(), **world.env()}, signature="http"
    )
    try:
        trace_id = uuid.uuid4().hex
        zero = httpx.get(f"{server.url}/?budget_seconds=0", timeout=30)
        assert zero.status_code == 200 and zero.json()["complete"] is False
        assert sum(zero.json()["removed"].values()) == 0

        bad = httpx.post(f"{server.url}/?budget_seconds=soon", timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_budget"

        response = httpx.post(
            server.url, json={"budget_seconds": 30}, headers={"X-Cloud-Trace-Context": f"{trace_id}/1;o=1"}, timeout=60
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["complete"] is True
        assert body["removed"]["instances"] == 1 and body["removed"]["notifications"] == 3
        assert body["removed"]["subscriptions"] == 4 and body["removed"]["topics"] == 2
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    finished = [line for line in lines if line.get("message") == "cleanup run finished"]
    assert finished and all("severity" in line for line in lines)
    assert finished[-1]["logging.googleapis.com/trace"] == f"projects/{world.project}/traces/{trace_id}"


def test_backend_unavailable_answers_503_json(world: World, emulators: EmulatorPair) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**emulators.env(), **world.env(), "FIRESTORE_EMULATOR_HOST": dead, "BACKEND_TIMEOUT_SECONDS": "1"}
    server = start_function("functions/cleanup/main.py", "cleanup", env, signature="http")
    try:
        response = httpx.get(f"{server.url}/?budget_seconds=5", timeout=60)
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"


def test_a_stale_instance_listed_without_entries_is_still_removed(world: World) -> None:
    world.instance("fresh-2", heartbeat_age=5)
    world.instance("stale-2", heartbeat_age=TIMEOUT * 2)
    # `instances` out of step with `live` (a crash between two writes of another version, say).
    world.db.collection("connections").document("u9").set(
        {
            "live": {"c1": {"instance": "fresh-2", "opened_at": world.ago(10)}},
            "instances": ["fresh-2", "stale-2"],
            "updated_at": world.ago(10),
        }
    )

    report = world.run()

    assert report.complete is True and report.removed["instances"] == 1 and report.removed["connections"] == 0
    assert (world.live_entries("u9") or {})["instances"] == ["fresh-2"]
    assert {s.id for s in world.db.collection("stream_instances").stream()} == {"fresh-2"}


def test_a_run_cut_short_leaves_a_consistent_state_that_the_next_run_finishes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = [f"stale-{i}" for i in range(10)]
    for instance_id in stale:
        world.instance(instance_id, heartbeat_age=TIMEOUT * 2)
    for user in range(60):
        world.connections(f"user-{user}", {f"c{user}": (stale[user % len(stale)], 900)})

    # Where the run stops must not depend on the machine's speed: its budget counts clock readings (each
    # check, each call's timeout): with 40 it got through 2 of the 10 instances when this was written.
    readings = itertools.count()
    monkeypatch.setattr(run_module, "Budget", lambda seconds: Budget(seconds, clock=lambda: float(next(readings))))
    first = world.run(budget=40)
    monkeypatch.undo()
    assert first.complete is False
    assert 0 < first.removed["connections"] < 60, f"cut short in the middle of its work: {first}"

    remaining = {s.id for s in world.db.collection("stream_instances").stream()}
    referenced = {i for s in world.db.collection("connections").stream() for i in s.get("instances")}
    assert referenced <= remaining, "an instance record goes only after its connection entries"
    assert first.removed["instances"] == len(stale) - len(remaining)
    second = world.run()
    assert second.complete is True
    total = {k: first.removed[k] + second.removed[k] for k in first.removed}
    assert total == {
        "instances": 10,
        "connections": 60,
        "notifications": 0,
        "event_keys": 0,
        "subscriptions": 20,
        "topics": 10,
    }
