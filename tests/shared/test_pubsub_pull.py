"""The streaming pull on an event loop: where it hands messages over, and how it acknowledges them.

The first two tests run on the Pub/Sub emulator; the acknowledgement tests drive
``PullStream._acknowledge`` with a stand-in call that records what it is sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Mapping, Sequence

import grpc
import pytest

from shared.backends import pubsub_pull
from shared.backends.pubsub_channel import PubSubChannel, ensure_topics
from shared.backends.pubsub_pull import LoopThread, PullStream
from shared.channel import ChannelMessage
from shared.config import Settings
from shared.ids import new_instance_id
from tests.support.waiting import wait_for


def _routed_to(instance_id: str, settings: Settings) -> PubSubChannel:
    def here(users: Collection[str]) -> Mapping[str, Collection[str]]:
        return {user: [instance_id] for user in users}

    ensure_topics(settings.project_id, [settings.notifications_topic])
    return PubSubChannel(settings.project_id, settings.notifications_topic, timeout=10, router=here)


def _receive_one(channel: PubSubChannel, instance_id: str, loop: asyncio.AbstractEventLoop | None) -> set[str]:
    """Subscribe, publish one change, and return the names of the threads the handler ran on."""
    threads: set[str] = set()
    received: list[ChannelMessage] = []

    def take(batch: Sequence[ChannelMessage]) -> None:
        threads.add(threading.current_thread().name)
        received.extend(batch)

    subscription = channel.subscribe(instance_id, take, loop=loop)
    try:
        wait_for(subscription.healthy, timeout=30, what="the instance's pulls to open")
        channel.publish_many([ChannelMessage(f"pull-{instance_id}", "notification", {"n": 1}, seq=1)])
        wait_for(lambda: received, timeout=30, what="the change")
    finally:
        subscription.close()
    assert [m.data for m in received] == [{"n": 1}]
    return threads


def test_a_subscription_given_a_loop_hands_messages_over_on_it_and_leaves_it_running(settings: Settings) -> None:
    instance_id = new_instance_id()
    channel = _routed_to(instance_id, settings)
    service_loop = LoopThread("service-loop")
    try:
        assert _receive_one(channel, instance_id, service_loop.loop) == {"service-loop"}
        # The loop is the caller's: closing the subscription does not stop it.
        assert service_loop.loop.is_running()
    finally:
        service_loop.stop(5)
        channel.close()


def test_a_subscription_without_a_loop_runs_its_own_and_stops_it_when_closed(settings: Settings) -> None:
    instance_id = new_instance_id()
    channel = _routed_to(instance_id, settings)
    try:
        threads = _receive_one(channel, instance_id, None)
    finally:
        channel.close()
    own = f"pull-{instance_id[:40]}"
    assert threads == {own}
    assert own not in {t.name for t in threading.enumerate()}


def test_the_emulators_channel_sends_no_keepalive_pings_and_pub_subs_does() -> None:
    # The emulator answers a ping every 30 s with GOAWAY "too_many_pings" after a few
    # minutes, ending both pulls (the CI failure this pins); Pub/Sub itself expects them.
    def keepalive(emulator: bool) -> dict[str, int]:
        return {k: v for k, v in pubsub_pull.channel_options(emulator) if "keepalive" in k}

    assert keepalive(emulator=True) == {}
    assert keepalive(emulator=False) == {"grpc.keepalive_time_ms": 30_000}


class _Call:
    """What ``_acknowledge`` uses of a streaming call: ``write``, recorded (or failing once ended)."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.ended = False

    async def write(self, request: object) -> None:
        if self.ended:
            raise grpc.aio.UsageError("the call has ended")
        self.sent.append(list(request.ack_ids))  # type: ignore[attr-defined]


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_acknowledgements_of_responses_close_together_share_one_request() -> None:
    async def scenario() -> list[list[str]]:
        call, pending = _Call(), asyncio.Event()
        acks: list[str] = []
        acknowledging = asyncio.ensure_future(PullStream._acknowledge(call, acks, pending))
        for ids in (["a", "b"], ["c"], ["d"]):  # three responses, as the reader records them
            acks.extend(ids)
            pending.set()
            await asyncio.sleep(0)
        await _until(lambda: call.sent)
        acks.append("e")  # a later response: its own request
        pending.set()
        await _until(lambda: len(call.sent) == 2)
        acknowledging.cancel()
        return call.sent

    assert asyncio.run(scenario()) == [["a", "b", "c", "d"], ["e"]]


def test_a_quiet_pull_sends_an_empty_request_to_stay_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pubsub_pull, "KEEPALIVE_SECONDS", 0.05)

    async def scenario() -> list[list[str]]:
        call = _Call()
        acknowledging = asyncio.ensure_future(PullStream._acknowledge(call, [], asyncio.Event()))
        await _until(lambda: len(call.sent) >= 2)
        acknowledging.cancel()
        return call.sent

    assert asyncio.run(scenario())[:2] == [[], []]


def test_acknowledging_ends_quietly_when_its_call_has_ended() -> None:
    async def scenario() -> bool:
        call, acks, pending = _Call(), ["a"], asyncio.Event()
        call.ended = True
        pending.set()
        acknowledging = asyncio.ensure_future(PullStream._acknowledge(call, acks, pending))
        await asyncio.wait_for(acknowledging, 5)  # returns, rather than raising into the loop's handler
        return acknowledging.done() and acknowledging.exception() is None

    assert asyncio.run(scenario())
