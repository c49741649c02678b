"""The live channel on Google Cloud Pub/Sub (the dead-letter sink is in ``pubsub_dead_letters``).

Routing (SPEC section 1): like Redis pub/sub, a user's message reaches only the
stream instances that hold that user's streams. Each stream instance owns

- a topic ``stream-instance-{id}``, its inbox, with the subscription of the same
  name on it: publishers send a user's messages to the inboxes of the instances
  the connection registry names for that user, and to none when it names none;
- a subscription ``stream-instance-{id}~all`` on NOTIFICATIONS_TOPIC, which
  carries broadcasts and, when the registry cannot be read, every message
  (sending to all instances is the fallback, never dropping).

Both are created when the instance starts, deleted when it stops, and removed by
the cleanup function when the instance died. The Pub/Sub emulator keeps topics
apart exactly as Google Cloud does (unlike subscription filters, which it
ignores), so what each process receives is tested on it.

The receive path is lean on purpose (``pubsub_pull``): each subscription's
streaming pull runs on an event loop (the stream service's own), decodes each
response's messages in one go, hands them to the handler as one batch and
acknowledges them in the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent import futures
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions
from google.protobuf import duration_pb2

from shared.backends.google_errors import backend_error
from shared.backends.pubsub_dead_letters import PubSubDeadLetters  # noqa: F401 - moved there; importable here
from shared.backends.pubsub_pull import LoopThread, PullStream, open_channel
from shared.channel import (
    ALL_INSTANCES,
    BatchHandler,
    Channel,
    ChannelMessage,
    GapHandler,
    Router,
    Subscription,
)
from shared.errors import BackendUnavailable

logger = logging.getLogger(__name__)

INSTANCE_PREFIX = "stream-instance-"
# Subscription ids may hold "~"; instance ids never do, so the suffix cannot be mistaken for one.
BROADCAST_SUFFIX = "~all"
# Pub/Sub's minimum expiration: an orphaned subscription deletes itself a day after its last use.
_EXPIRATION = timedelta(days=1)
# Pub/Sub's minimum retention: what a stream misses beyond this is recovered from Firestore anyway.
_RETENTION = timedelta(minutes=10)
# How long close() may spend on each deletion (SIGTERM leaves 10 s in all).
_CLOSE_CALL_SECONDS = 2.0


def instance_topic_id(instance_id: str) -> str:
    return f"{INSTANCE_PREFIX}{instance_id}"


def instance_subscription_id(instance_id: str) -> str:
    return f"{INSTANCE_PREFIX}{instance_id}"


def broadcast_subscription_id(instance_id: str) -> str:
    return f"{INSTANCE_PREFIX}{instance_id}{BROADCAST_SUFFIX}"


def instance_of(resource_id: str) -> str | None:
    """The instance id in the name of an instance's topic or subscription; None for other names."""
    if not resource_id.startswith(INSTANCE_PREFIX):
        return None
    rest = resource_id[len(INSTANCE_PREFIX) :]
    if rest.endswith(BROADCAST_SUFFIX):
        rest = rest[: -len(BROADCAST_SUFFIX)]
    return rest or None


def ordering_key(message: ChannelMessage) -> str:
    """The user's ordering key for a message without a change number; none ("") for the others.

    A change carries its number, and a stream puts changes in order by number
    whatever order they arrive in (a gap makes it replay from the store), as it
    must anyway for changes of one user published by different processes.
    Without a key those messages batch together across users: one Publish
    request for many users instead of one per message, and no per-key state in
    Pub/Sub. Messages of the Redis-shaped ``publish_notification`` /
    ``publish_batch`` have no number: their order is kept by the key, as Redis
    kept a channel's order.
    """
    return message.user_id if message.seq is None and not message.broadcast else ""


def _resume(publisher: pubsub_v1.PublisherClient, topic: str, key: str) -> None:
    """A failed publish pauses its ordering key until resumed; one that timed out is still
    in flight and has paused nothing (resume_publish then raises RuntimeError)."""
    if not key:
        return
    with contextlib.suppress(RuntimeError):
        publisher.resume_publish(topic, key)


class PubSubChannel(Channel):
    def __init__(self, project_id: str, topic: str, *, timeout: float = 10.0, router: Router | None = None) -> None:
        super().__init__(router)
        self._project_id = project_id
        self._topic_id = topic
        self._timeout = timeout
        self._lock = threading.Lock()
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._subscriber: pubsub_v1.SubscriberClient | None = None

    @property
    def project_id(self) -> str:
        return self._project_id

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def topic_path(self) -> str:
        return f"projects/{self._project_id}/topics/{self._topic_id}"

    def instance_topic_path(self, instance_id: str) -> str:
        return f"projects/{self._project_id}/topics/{instance_topic_id(instance_id)}"

    def publisher_client(self) -> pubsub_v1.PublisherClient:
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

    def send(self, target: str, messages: Sequence[ChannelMessage]) -> None:
        publisher = self.publisher_client()
        broadcast = target == ALL_INSTANCES
        topic = self.topic_path if broadcast else self.instance_topic_path(target)
        retry = Retry(initial=0.1, maximum=1.0, timeout=self._timeout)
        pending = [(message, self._publish_one(publisher, topic, message, retry)) for message in messages]
        failure: BaseException | None = None
        for message, future in pending:
            try:
                future.result(timeout=self._timeout)
            except gexc.NotFound as exc:
                # A registry entry of an instance that is gone (its inbox with it):
                # nobody listens there, and its clients replay where they reconnect.
                # NOTIFICATIONS_TOPIC missing is a misconfiguration (backend_error says so).
                _resume(publisher, topic, ordering_key(message))
                if broadcast:
                    failure = failure or exc
            except Exception as exc:  # noqa: BLE001 - every publish failure is reported below
                failure = failure or exc
                _resume(publisher, topic, ordering_key(message))
        if failure is not None:
            raise backend_error(failure, f"publish to {topic.rsplit('/', 1)[-1]}", "Pub/Sub") from failure

    def _publish_one(
        self, publisher: pubsub_v1.PublisherClient, topic: str, message: ChannelMessage, retry: Retry
    ) -> futures.Future[Any]:
        key = ordering_key(message)
        data, attributes = message.pubsub_message()

        def send() -> futures.Future[Any]:
            return publisher.publish(  # type: ignore[no-any-return]
                topic, data, ordering_key=key, retry=retry, timeout=self._timeout, **attributes
            )

        try:
            return send()
        except PublishToPausedOrderingKeyException:
            # A publish of this user failed after an earlier call stopped waiting for it.
            publisher.resume_publish(topic, key)
            return send()

    def ping(self) -> None:
        try:
            self.publisher_client().get_topic(
                request={"topic": self.topic_path}, retry=None, timeout=min(self._timeout, 5.0)
            )
        except gexc.GoogleAPIError as exc:
            raise BackendUnavailable(f"Pub/Sub topic {self._topic_id} unavailable: {exc!r}") from exc

    def subscribe(
        self,
        instance_id: str,
        handler: BatchHandler,
        on_gap: GapHandler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Subscription:
        # The instance id names the inbox, the subscriptions and the registry record,
        # so the cleanup function can delete what a dead instance left.
        return InstanceSubscription(self, handler, on_gap, instance_id, loop)

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
    """One stream instance's inbox topic and its two subscriptions (inbox, broadcasts)."""

    def __init__(
        self,
        channel: PubSubChannel,
        handler: BatchHandler,
        on_gap: GapHandler | None,
        instance_id: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.channel = channel
        self._handler = handler
        self._on_gap = on_gap
        self.instance_id = instance_id
        self.closed = threading.Event()
        subscriber = channel.subscriber_client()
        project = channel.project_id
        self._inbox_topic = channel.instance_topic_path(instance_id)
        self._inbox = subscriber.subscription_path(project, instance_subscription_id(instance_id))
        self._broadcasts = subscriber.subscription_path(project, broadcast_subscription_id(instance_id))
        self._ensure_inbox()
        self._ensure_broadcasts()
        self._streams = [
            PullStream(self._inbox, self.deliver, self._ensure_inbox, self.gap, self.closed),
            PullStream(self._broadcasts, self.deliver, self._ensure_broadcasts, self.gap, self.closed),
        ]
        self._own_loop: LoopThread | None = None
        if loop is None:
            self._own_loop = LoopThread(f"pull-{instance_id[:40]}")
            loop = self._own_loop.loop
        self._pulled = threading.Event()
        self._pulling = asyncio.run_coroutine_threadsafe(self._pull(), loop)

    async def _pull(self) -> None:
        try:
            channel = open_channel()
            try:
                await asyncio.gather(*(stream.run(channel) for stream in self._streams))
            finally:
                await channel.close()
        finally:
            self._pulled.set()

    @property
    def name(self) -> str:
        return str(self._inbox)

    def healthy(self) -> bool:
        return not self.closed.is_set() and all(s.healthy.is_set() for s in self._streams)

    def _ensure_inbox(self) -> bool:
        publisher = self.channel.publisher_client()
        try:
            publisher.create_topic(
                request={"name": self._inbox_topic, "labels": {"role": "stream-instance"}},
                timeout=self.channel.timeout,
            )
        except gexc.AlreadyExists:
            pass
        except gexc.GoogleAPIError as exc:
            raise BackendUnavailable(f"cannot create topic {self._inbox_topic}: {exc!r}") from exc
        return self._create_subscription(self._inbox, self._inbox_topic)

    def _ensure_broadcasts(self) -> bool:
        return self._create_subscription(self._broadcasts, self.channel.topic_path)

    def _create_subscription(self, path: str, topic: str) -> bool:
        request = {
            "name": path,
            "topic": topic,
            "ack_deadline_seconds": 10,
            "message_retention_duration": duration_pb2.Duration(seconds=int(_RETENTION.total_seconds())),
            "expiration_policy": {"ttl": duration_pb2.Duration(seconds=int(_EXPIRATION.total_seconds()))},
            "enable_message_ordering": True,
            "labels": {"role": "stream-instance"},
        }
        try:
            self.channel.subscriber_client().create_subscription(request=request, timeout=self.channel.timeout)
        except gexc.AlreadyExists:
            return False
        except gexc.GoogleAPIError as exc:
            raise BackendUnavailable(f"cannot create subscription {path}: {exc!r}") from exc
        logger.info("channel subscription ready", extra={"subscription": path})
        return True

    def deliver(self, received: Sequence[Any]) -> None:
        """Decode one response's messages (raw protobuf ``ReceivedMessage``) and hand them over as one batch."""
        batch: list[ChannelMessage] = []
        for item in received:
            message = item.message
            try:
                batch.append(ChannelMessage.decode(message.data, message.attributes))
            except (ValueError, UnicodeDecodeError):
                logger.warning("dropping malformed channel message", extra={"message_id": message.message_id})
        if not batch:
            return
        try:
            self._handler(batch)
        except Exception:
            logger.exception("channel handler failed")

    def gap(self) -> None:
        if self._on_gap is not None:
            self._on_gap()

    def close(self, deadline: float | None = None) -> None:
        """Stop pulling and delete the inbox and both subscriptions, within ``deadline`` (monotonic)."""
        if self.closed.is_set():
            return
        self.closed.set()
        deadline = deadline if deadline is not None else time.monotonic() + 3 * _CLOSE_CALL_SECONDS
        self._pulling.cancel()
        subscriber = self.channel.subscriber_client()
        publisher = self.channel.publisher_client()
        inbox, broadcasts, topic = self._inbox, self._broadcasts, self._inbox_topic

        def delete_inbox(timeout: float) -> None:
            subscriber.delete_subscription(subscription=inbox, timeout=timeout)

        def delete_broadcasts(timeout: float) -> None:
            subscriber.delete_subscription(subscription=broadcasts, timeout=timeout)

        def delete_topic(timeout: float) -> None:
            publisher.delete_topic(topic=topic, timeout=timeout)

        deletions = (
            ("subscription", inbox, delete_inbox),
            ("subscription", broadcasts, delete_broadcasts),
            ("topic", topic, delete_topic),
        )
        for kind, path, delete in deletions:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                logger.warning("no time left to delete a channel resource", extra={"resource": path})
                continue
            try:
                delete(min(_CLOSE_CALL_SECONDS, remaining))
                logger.info(f"channel {kind} deleted", extra={"resource": path})
            except gexc.NotFound:
                pass
            except Exception as exc:  # noqa: BLE001 - it expires by itself; cleanup also removes orphans
                logger.warning(f"could not delete channel {kind}", extra={"resource": path, "error": repr(exc)[:300]})
        self._pulled.wait(max(0.0, min(0.5, deadline - time.monotonic())))
        if self._own_loop is not None:
            self._own_loop.stop(max(0.0, min(0.5, deadline - time.monotonic())))


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
