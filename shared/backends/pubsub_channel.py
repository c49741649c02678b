"""The live channel on Google Cloud Pub/Sub (the dead-letter sink is in ``pubsub_dead_letters``).

Every message goes to one topic (NOTIFICATIONS_TOPIC) with the Redis channel
name as attribute ``channel`` and the user id as ordering key. Each process that
holds streams creates its own subscription, so every instance sees every
message (fan-out) and no process ever inherits messages another one leased.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from concurrent import futures
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException
from google.cloud.pubsub_v1.types import BatchSettings, FlowControl, PublisherOptions
from google.protobuf import duration_pb2

from shared.backends.google_errors import backend_error
from shared.backends.pubsub_dead_letters import PubSubDeadLetters  # noqa: F401 - moved there; importable here
from shared.channel import Channel, ChannelMessage, GapHandler, MessageHandler, Subscription
from shared.errors import BackendUnavailable

logger = logging.getLogger(__name__)

INSTANCE_SUBSCRIPTION_PREFIX = "stream-instance-"
# Pub/Sub's minimum expiration: an orphaned subscription deletes itself a day after its last use.
_EXPIRATION = timedelta(days=1)
# Pub/Sub's minimum retention: what a stream misses beyond this is recovered from Firestore anyway.
_RETENTION = timedelta(minutes=10)
_RESUBSCRIBE_BACKOFF = (0.5, 1.0, 2.0, 5.0)


def instance_subscription_id(instance_id: str) -> str:
    return f"{INSTANCE_SUBSCRIPTION_PREFIX}{instance_id}"


class PubSubChannel(Channel):
    def __init__(self, project_id: str, topic: str, *, timeout: float = 10.0) -> None:
        self._project_id = project_id
        self._topic_id = topic
        self._timeout = timeout
        self._lock = threading.Lock()
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None

    @property
    def topic_path(self) -> str:
        return f"projects/{self._project_id}/topics/{self._topic_id}"

    def _publisher_client(self) -> pubsub_v1.PublisherClient:
        with self._lock:
            if self._publisher is None:
                self._publisher = pubsub_v1.PublisherClient(
                    # A short batch latency: a notification is worth more now than batched.
                    batch_settings=BatchSettings(max_latency=0.005, max_messages=500),
                    publisher_options=PublisherOptions(enable_message_ordering=True),
                )
            return self._publisher

    def subscriber_client(self) -> pubsub_v1.SubscriberClient:
        with self._lock:
            if self._subscriber is None:
                self._subscriber = pubsub_v1.SubscriberClient()
            return self._subscriber

    def publish_many(self, messages: Iterable[ChannelMessage]) -> None:
        publisher = self._publisher_client()
        retry = Retry(initial=0.1, maximum=1.0, timeout=self._timeout)
        pending: list[tuple[ChannelMessage, futures.Future[Any]]] = []
        for message in messages:
            pending.append((message, self._publish_one(publisher, message, retry)))
        failure: BaseException | None = None
        for message, future in pending:
            try:
                future.result(timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - every publish failure is reported below
                failure = failure or exc
                # A failed publish pauses its ordering key until resumed; one that timed
                # out is still in flight and has paused nothing (resume_publish raises).
                with contextlib.suppress(RuntimeError):
                    publisher.resume_publish(self.topic_path, message.user_id)
        if failure is not None:
            raise backend_error(failure, f"publish to {self._topic_id}", "Pub/Sub") from failure

    def _publish_one(
        self, publisher: pubsub_v1.PublisherClient, message: ChannelMessage, retry: Retry
    ) -> futures.Future[Any]:
        def send() -> futures.Future[Any]:
            return publisher.publish(  # type: ignore[no-any-return]
                self.topic_path,
                message.encode(),
                ordering_key=message.user_id,
                retry=retry,
                timeout=self._timeout,
                **message.attributes(),
            )

        try:
            return send()
        except PublishToPausedOrderingKeyException:
            # A publish of this user failed after an earlier call stopped waiting for it.
            publisher.resume_publish(self.topic_path, message.user_id)
            return send()

    def ping(self) -> None:
        try:
            self._publisher_client().get_topic(
                request={"topic": self.topic_path}, retry=None, timeout=min(self._timeout, 5.0)
            )
        except gexc.GoogleAPIError as exc:
            raise BackendUnavailable(f"Pub/Sub topic {self._topic_id} unavailable: {exc!r}") from exc

    def subscribe(self, instance_id: str, handler: MessageHandler, on_gap: GapHandler | None = None) -> Subscription:
        # The instance id names both the subscription and the registry record,
        # so the cleanup function can delete the subscription of a dead instance.
        return InstanceSubscription(self, handler, on_gap, instance_id)

    def subscription_name(self, instance_id: str) -> str:
        return f"projects/{self._project_id}/subscriptions/{instance_subscription_id(instance_id)}"

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
            subscriber, self._subscriber = self._subscriber, None
        if publisher is not None:
            publisher.stop()
        if subscriber is not None:
            subscriber.close()


class InstanceSubscription(Subscription):
    """One process's own subscription, re-established when the stream pull dies."""

    def __init__(
        self, channel: PubSubChannel, handler: MessageHandler, on_gap: GapHandler | None, instance_id: str
    ) -> None:
        self._channel = channel
        self._handler = handler
        self._on_gap = on_gap
        self.instance_id = instance_id
        self._subscriber = channel.subscriber_client()
        self._path = self._subscriber.subscription_path(channel._project_id, instance_subscription_id(instance_id))
        self._closed = threading.Event()
        self._healthy = threading.Event()
        self._future: Any = None
        self._create()
        self._start_pull()

    @property
    def name(self) -> str:
        return str(self._path)

    def healthy(self) -> bool:
        return self._healthy.is_set() and not self._closed.is_set()

    def _create(self) -> None:
        request = {
            "name": self._path,
            "topic": self._channel.topic_path,
            "ack_deadline_seconds": 10,
            "message_retention_duration": duration_pb2.Duration(seconds=int(_RETENTION.total_seconds())),
            "expiration_policy": {"ttl": duration_pb2.Duration(seconds=int(_EXPIRATION.total_seconds()))},
            "enable_message_ordering": True,
            "labels": {"role": "stream-instance"},
        }
        try:
            self._subscriber.create_subscription(request=request, timeout=self._channel._timeout)
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPIError as exc:
            raise BackendUnavailable(f"cannot create subscription {self._path}: {exc!r}") from exc
        logger.info("channel subscription ready", extra={"subscription": self._path})

    def _start_pull(self) -> None:
        self._future = self._subscriber.subscribe(
            self._path,
            callback=self._receive,
            flow_control=FlowControl(max_messages=10_000, max_bytes=100 * 1024 * 1024),
        )
        self._future.add_done_callback(self._pull_ended)
        self._healthy.set()

    def _receive(self, message: Any) -> None:
        # Acknowledge first: a live channel has no use for redelivery; what a
        # stream misses it recovers from Firestore.
        message.ack()
        try:
            decoded = ChannelMessage.decode(message.data, message.attributes)
        except (ValueError, UnicodeDecodeError):
            logger.warning("dropping malformed channel message", extra={"message_id": message.message_id})
            return
        try:
            self._handler(decoded)
        except Exception:
            logger.exception("channel handler failed", extra={"message_id": message.message_id})

    def _pull_ended(self, future: Any) -> None:
        self._healthy.clear()
        if self._closed.is_set():
            return
        logger.warning("channel stream pull ended; re-establishing", extra={"error": repr(future.exception())})
        threading.Thread(target=self._reestablish, name="resubscribe", daemon=True).start()

    def _reestablish(self) -> None:
        attempt = 0
        while not self._closed.is_set():
            try:
                self._create()
                self._start_pull()
            except Exception as exc:  # noqa: BLE001 - keep trying until closed
                delay = _RESUBSCRIBE_BACKOFF[min(attempt, len(_RESUBSCRIBE_BACKOFF) - 1)]
                attempt += 1
                logger.warning("re-subscribe failed", extra={"error": repr(exc), "retry_in": delay})
                self._closed.wait(delay)
                continue
            if self._on_gap is not None:
                self._on_gap()
            return

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=5)
            except Exception:  # noqa: BLE001, S110 - cancelled pulls end with an error by design
                pass
        try:
            self._subscriber.delete_subscription(subscription=self._path, timeout=5)
            logger.info("channel subscription deleted", extra={"subscription": self._path})
        except gexc.NotFound:
            pass
        except gexc.GoogleAPIError as exc:
            # It expires by itself; the cleanup function also removes orphans.
            logger.warning("could not delete channel subscription", extra={"error": repr(exc)})


def ensure_topics(project_id: str, topics: Iterable[str], timeout: float = 10.0) -> None:
    """Create topics that do not exist yet (local runs and tests; deploy.sh in the cloud)."""
    publisher = pubsub_v1.PublisherClient()
    try:
        for topic in topics:
            try:
                publisher.create_topic(name=f"projects/{project_id}/topics/{topic}", timeout=timeout)
            except gexc.AlreadyExists:
                pass
    finally:
        publisher.stop()
