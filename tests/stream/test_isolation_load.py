"""Many users at once: no delivery to a wrong user, nothing lost.

1,000 users hold one stream each, opened by one asyncio process of raw-socket
SSE clients (bench/loadgen.py). A mixed load - bursts of different sizes per
user, messages for users with no stream, and "poison" channel messages routed
to one user whose body names another - goes through the injection hook (the
same hand-over as the Pub/Sub callback) on the memory backend. A smaller run
goes through the real path: content topic -> ingest function -> Firestore +
channel -> stream service. Every client checks every notification's
``user_id`` against its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from google.cloud import pubsub_v1

from bench.loadgen import StreamPool, raise_open_files_limit
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import new_user, valid_event
from tests.support.pubsub import PullSubscription
from tests.support.stream import INJECT_APP, start_stream_service, token_for

STREAM = "/api/v1/notifications/stream"
USERS = 1000
MEMORY_EVENTS = 6000
EMULATOR_USERS = 40
EMULATOR_EVENTS = 160


class CheckingPool(StreamPool):
    """A StreamPool whose clients also check the ``user_id`` inside every notification."""

    def __init__(self, host: str, port: int, *, key_field: str = "id") -> None:
        super().__init__(host, port, key_field=key_field)
        self.foreign: list[tuple[str, str]] = []  # (stream user, user_id in the notification)

    def on_notification(self, stream: Any, data: bytes, now: float) -> None:
        try:
            owner = json.loads(data).get("user_id")
        except (ValueError, AttributeError):
            owner = None
        if owner != stream.user:
            self.foreign.append((stream.user, str(owner)))
        super().on_notification(stream, data, now)


async def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def _id(sequence: int) -> str:
    return f"{int(time.time() * 1e6):014x}{sequence:010x}"


async def _memory_run(url: str, port: int) -> CheckingPool:
    rng = random.Random(7)
    users = [f"load-{n:04d}-{uuid.uuid4().hex[:6]}" for n in range(USERS)]
    tokens = {u: token_for(u) for u in users}
    pool = CheckingPool("127.0.0.1", port)
    # As fast as one service process accepts them here (2,000 a second took longer: its loop fell behind).
    await pool.open(users, lambda u: f"{STREAM}?token={tokens[u]}", rate=1000)
    assert len(pool.established()) == USERS, [s.error for s in pool.streams if s.error][:5]

    per_user: dict[str, list[str]] = {u: [] for u in users}
    messages: list[dict[str, Any]] = []
    for sequence in range(MEMORY_EVENTS):
        # Skewed: a few users get many events, most get a few.
        user = users[min(int(rng.expovariate(1 / 150)), USERS - 1)] if sequence % 2 else rng.choice(users)
        key = _id(sequence)
        sent_at = time.time()
        pool.sent_at[key] = sent_at
        pool.user_of_key[key] = user
        per_user[user].append(key)
        messages.append(
            {"user_id": user, "type": "notification", "data": {"id": key, "user_id": user}, "sent_at": sent_at}
        )
    poison = []
    for sequence in range(MEMORY_EVENTS, MEMORY_EVENTS + 200):
        routed_to, named = rng.sample(users, 2)
        key = _id(sequence)
        pool.sent_at[key] = time.time()
        pool.user_of_key[key] = routed_to
        # Routed to one user, naming another: the hub must show it to neither.
        poison.append({"user_id": routed_to, "type": "notification", "data": {"id": key, "user_id": named}})
        # Addressed to users without a stream: must reach nobody.
        poison.append({"user_id": new_user("absent"), "type": "notification", "data": {"id": _id(sequence + 500)}})
    load = messages + poison
    rng.shuffle(load)
    for message in load:
        message.setdefault("sent_at", time.time())

    async with httpx.AsyncClient(timeout=60) as client:
        for start in range(0, len(load), 500):
            response = await client.post(f"{url}/internal/bench/inject", json=load[start : start + 500])
            assert response.status_code == 200, response.text

    await _wait(lambda: pool.delivered() >= MEMORY_EVENTS, 60, "every notification delivered")
    await asyncio.sleep(1.5)  # a misrouted or duplicated message would have arrived by now
    assert pool.lost(per_user) == 0
    pool.close()
    return pool


def test_a_thousand_users_through_the_injection_hook_no_leak_no_loss() -> None:
    raise_open_files_limit()
    server = start_stream_service({"NOTIFICATIONS_BACKEND": "memory"}, app=INJECT_APP)
    try:
        pool = asyncio.run(_memory_run(server.url, server.port))
    finally:
        server.stop()
    assert pool.foreign == [], f"{len(pool.foreign)} notifications reached a wrong user"
    assert pool.misrouted == 0 and pool.unknown == 0
    assert pool.duplicates() == 0
    assert pool.delivered() == MEMORY_EVENTS
    assert all(s.heartbeats >= 1 for s in pool.streams), "every stream stayed alive"


async def _emulator_run(url: str, port: int, settings: Settings) -> tuple[CheckingPool, dict[str, list[str]]]:
    users = [new_user("real") for _ in range(EMULATOR_USERS)]
    tokens = {u: token_for(u) for u in users}
    pool = CheckingPool("127.0.0.1", port, key_field="title")
    await pool.open(users, lambda u: f"{STREAM}?token={tokens[u]}", rate=200)
    assert len(pool.established()) == EMULATOR_USERS

    rng = random.Random(11)
    per_user: dict[str, list[str]] = {u: [] for u in users}
    publisher = pubsub_v1.PublisherClient()
    topic = f"projects/{settings.project_id}/topics/{settings.content_events_topic}"
    futures = []
    for number in range(EMULATOR_EVENTS):
        user = rng.choice(users)
        title = f"n{number}-{uuid.uuid4().hex[:8]}"
        pool.sent_at[title] = time.time()
        pool.user_of_key[title] = user
        per_user[user].append(title)
        futures.append(publisher.publish(topic, json.dumps(valid_event(user, title=title)).encode()))
    for future in futures:
        await asyncio.wrap_future(future)
    publisher.stop()
    await _wait(lambda: pool.delivered() >= EMULATOR_EVENTS, 90, "every event delivered through the emulators")
    await asyncio.sleep(2.0)
    pool.close()
    return pool, per_user


def test_the_real_path_under_mixed_load_no_leak_no_loss(
    emulators_session: EmulatorPair, settings: Settings, push_subscription: PullSubscription
) -> None:
    server = start_stream_service(emulators_session.env())
    try:
        pool, per_user = asyncio.run(_emulator_run(server.url, server.port, settings))
    finally:
        server.stop()
    assert pool.foreign == [] and pool.misrouted == 0 and pool.unknown == 0
    assert pool.lost(per_user) == 0 and pool.duplicates() == 0
    assert pool.delivered() == EMULATOR_EVENTS
