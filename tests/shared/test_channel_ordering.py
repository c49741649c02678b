"""What the channel keeps in order on Pub/Sub, and what it batches (emulator, no server).

Changes carry their number (streams order them by it), so they are published
without an ordering key and batch across users; the Redis-shaped messages have
no number, so each user's keep their order by the user's key.

The emulator delivers one publisher's messages in order even without a key,
so the arrival-order test guards the contract rather than proves the key: the
key rule itself is what the first test pins down.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence

import pytest

from shared.backends.pubsub_channel import PubSubChannel, ensure_topics, ordering_key
from shared.channel import ChannelMessage
from shared.config import Settings
from shared.ids import new_instance_id
from tests.support.waiting import wait_for


def test_only_messages_without_a_change_number_have_an_ordering_key() -> None:
    assert ordering_key(ChannelMessage("u1", "notification", {})) == "u1"
    assert ordering_key(ChannelMessage("u1", "notification", {}, seq=4)) == ""
    assert ordering_key(ChannelMessage("", "notification", {}, seq=2, broadcast=True)) == ""


@pytest.fixture
def instance(settings: Settings) -> Iterator[tuple[PubSubChannel, list[ChannelMessage], threading.Lock]]:
    """A subscribed stream instance that every user's messages are routed to."""
    ensure_topics(settings.project_id, [settings.notifications_topic])
    instance_id = new_instance_id()

    def everyone_here(users: Collection[str]) -> Mapping[str, Collection[str]]:
        return {user: [instance_id] for user in users}

    channel = PubSubChannel(settings.project_id, settings.notifications_topic, timeout=10, router=everyone_here)
    received: list[ChannelMessage] = []
    lock = threading.Lock()

    def take(batch: Sequence[ChannelMessage]) -> None:
        with lock:
            received.extend(batch)

    subscription = channel.subscribe(instance_id, take)
    wait_for(subscription.healthy, timeout=30, what="the instance's pulls to open")
    yield channel, received, lock
    subscription.close()
    channel.close()


def test_a_users_numberless_messages_arrive_in_publish_order(
    instance: tuple[PubSubChannel, list[ChannelMessage], threading.Lock],
) -> None:
    channel, received, lock = instance
    users = [f"redis-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for round_number in range(40):
        # Interleaved users, each call a batch: only each user's own order is promised.
        assert channel.publish_batch([(u, {"n": round_number}) for u in users]) == len(users)
    wait_for(lambda: len(received) >= 40 * len(users), timeout=30, what="every message")
    with lock:
        for user in users:
            assert [m.data["n"] for m in received if m.user_id == user] == list(range(40))


def test_numbered_changes_of_many_users_arrive_once_each(
    instance: tuple[PubSubChannel, list[ChannelMessage], threading.Lock],
) -> None:
    channel, received, lock = instance
    messages = [
        ChannelMessage(f"many-{n}", "notification", {"id": uuid.uuid4().hex}, seq=1 + n % 7) for n in range(500)
    ]
    channel.publish_many(messages)
    wait_for(lambda: len(received) >= len(messages), timeout=30, what="every change")
    with lock:
        assert sorted(m.data["id"] for m in received) == sorted(m.data["id"] for m in messages)
