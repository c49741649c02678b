"""Pub/Sub helpers for tests, on the real client against the emulator."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from shared.channel import ChannelMessage


@dataclass
class Received:
    data: bytes
    attributes: dict[str, str]
    message_id: str

    def json(self) -> Any:
        return json.loads(self.data)

    def channel_message(self) -> ChannelMessage:
        """The live channel's message (its data and attributes together)."""
        return ChannelMessage.decode(self.data, self.attributes)


class PullSubscription:
    """A pull subscription made for one test, deleted at the end."""

    def __init__(
        self, project: str, topic: str, *, push_endpoint: str | None = None, large_messages: bool = False
    ) -> None:
        self.client = _large_message_client() if large_messages else pubsub_v1.SubscriberClient()
        self.path = self.client.subscription_path(project, f"test-{topic}-{uuid.uuid4().hex[:8]}")
        request: dict[str, Any] = {
            "name": self.path,
            "topic": f"projects/{project}/topics/{topic}",
            "ack_deadline_seconds": 10,
        }
        if push_endpoint:
            request["push_config"] = {"push_endpoint": push_endpoint}
        self.client.create_subscription(request=request)

    def pull(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Pull until ``count`` messages arrived (or fail after ``timeout``)."""
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                response = self.client.pull(request={"subscription": self.path, "max_messages": 100}, timeout=2.0)
            except gexc.DeadlineExceeded:
                continue
            if response.received_messages:
                self.client.acknowledge(
                    request={"subscription": self.path, "ack_ids": [m.ack_id for m in response.received_messages]}
                )
            for item in response.received_messages:
                got.append(Received(item.message.data, dict(item.message.attributes), item.message.message_id))
        if len(got) < count:
            raise AssertionError(f"expected {count} messages on {self.path}, got {len(got)}")
        return got

    def drain(self, settle: float = 1.0) -> list[Received]:
        """Everything that arrives until nothing has come for ``settle`` seconds."""
        got: list[Received] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle:
            try:
                response = self.client.pull(request={"subscription": self.path, "max_messages": 100}, timeout=settle)
            except gexc.DeadlineExceeded:
                continue
            if response.received_messages:
                quiet_since = time.monotonic()
                self.client.acknowledge(
                    request={"subscription": self.path, "ack_ids": [m.ack_id for m in response.received_messages]}
                )
            for item in response.received_messages:
                got.append(Received(item.message.data, dict(item.message.attributes), item.message.message_id))
        return got

    def delete(self) -> None:
        try:
            self.client.delete_subscription(request={"subscription": self.path})
        except gexc.NotFound:
            pass
        self.client.close()


def _large_message_client() -> pubsub_v1.SubscriberClient:
    """A subscriber that can pull messages of up to 10 MB: the emulator's channel caps replies at 4 MiB."""
    host = os.environ["PUBSUB_EMULATOR_HOST"]
    channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", -1)])
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel, host=host))


def push_envelope(data: bytes, attributes: dict[str, str], message_id: str, subscription: str) -> dict[str, Any]:
    """The body Pub/Sub push sends, for tests that deliver by hand."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        },
        "subscription": subscription,
    }


class InstanceTap(PullSubscription):
    """A stand-in stream instance that holds a stream of each of ``users``, as the routed channel sees it.

    It has an inbox topic and a pull subscription on it, and the registry names
    it in each user's ``connections`` document, so publishers route those users'
    messages here (and no other user's).
    """

    def __init__(self, project: str, users: list[str]) -> None:
        from google.cloud import firestore

        from shared.backends import firestore_registry as registry
        from shared.backends.pubsub_channel import instance_topic_id

        self.instance_id = f"tap-{uuid.uuid4().hex[:10]}"
        self.topic = instance_topic_id(self.instance_id)
        self._publisher = pubsub_v1.PublisherClient()
        self._publisher.create_topic(name=f"projects/{project}/topics/{self.topic}")
        super().__init__(project, self.topic)
        self._db = firestore.Client(project=project)
        self._refs = [self._db.collection(registry.CONNECTIONS).document(user) for user in users]
        live = {f"tap-{uuid.uuid4().hex[:8]}": {"instance": self.instance_id, "opened_at": time.time()}}
        for ref in self._refs:
            ref.set(registry.connections_document(live, firestore.SERVER_TIMESTAMP))

    def delete(self) -> None:
        for ref in self._refs:
            ref.delete()
        super().delete()
        try:
            self._publisher.delete_topic(topic=f"{self.path.split('/subscriptions/')[0]}/topics/{self.topic}")
        except gexc.NotFound:
            pass
        self._publisher.stop()
        self._db.close()  # type: ignore[no-untyped-call]
