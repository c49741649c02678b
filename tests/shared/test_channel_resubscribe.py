"""The Pub/Sub emulator dies and comes back: the instance subscription re-establishes
itself, reports the gap (so streams replay from Firestore), and delivery resumes,
with the same long-lived publisher."""

from __future__ import annotations

import os
import threading

import pytest

from devtools import emulators as emulator_tools
from shared.backends.pubsub_channel import PubSubChannel, ensure_topics
from shared.channel import ChannelMessage
from shared.ids import new_instance_id
from tests.support.waiting import wait_for

PROJECT = "resubscribe-project"
TOPIC = "user-notifications"


@pytest.fixture
def pubsub(private_pubsub: emulator_tools.Emulator, monkeypatch: pytest.MonkeyPatch) -> emulator_tools.Emulator:
    """The test's own Pub/Sub emulator, the one every client made in the test reaches."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", private_pubsub.address)
    return private_pubsub


def test_subscription_survives_an_emulator_restart(pubsub: emulator_tools.Emulator) -> None:
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub.address
    ensure_topics(PROJECT, [TOPIC])
    channel = PubSubChannel(PROJECT, TOPIC, timeout=3)
    received: list[int] = []
    gap = threading.Event()
    subscription = channel.subscribe(
        new_instance_id(), lambda batch: received.extend(m.data["n"] for m in batch), on_gap=gap.set
    )
    try:
        channel.publish(ChannelMessage("u1", "notification", {"n": 1}))
        wait_for(lambda: 1 in received, what="delivery before the outage")

        pubsub.stop()
        pubsub.start()
        ensure_topics(PROJECT, [TOPIC])  # the emulator forgets everything; real Pub/Sub keeps topics

        assert gap.wait(60), "the gap is reported so streams can replay what they missed"
        # Its two pulls (inbox, broadcasts) come back independently.
        wait_for(subscription.healthy, timeout=30, what="both pulls of the subscription to be back")

        def published_after_restart() -> bool:
            # Publishing may fail while the publisher's channel reconnects; a caller retries.
            try:
                channel.publish(ChannelMessage("u1", "notification", {"n": 2}))
            except Exception:
                return False
            return True

        wait_for(published_after_restart, timeout=30, interval=0.5, what="publish after the restart")
        wait_for(lambda: 2 in received, timeout=15, what="delivery after the restart")
    finally:
        subscription.close()
        channel.close()
