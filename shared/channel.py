"""The live channel: what the Redis pub/sub of the old design did, on any backend.

A message published on ``notifications:channel:{user_id}`` reaches every stream
of that user connected at that moment and no stream of any other user. The
envelope names what happened (a new notification, or a change to some) so one
subscription per stream instance carries everything a browser needs.

Like Redis, delivery is routed: ``publish_many`` asks the router (the connection
registry) which stream instances hold each user's streams and sends each message
to those instances only; a user with no open stream costs no message. A
broadcast goes to every instance, and so does everything when the router cannot
answer (sending to all is the fallback, never dropping).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.errors import BackendUnavailable

CHANNEL_PREFIX = "notifications:channel:"
# The routing target that reaches every stream instance.
ALL_INSTANCES = "*"

MessageType = Literal["notification", "notification.updated", "notification.deleted"]
MESSAGE_TYPES: frozenset[str] = frozenset({"notification", "notification.updated", "notification.deleted"})

logger = logging.getLogger(__name__)


def channel_name(user_id: str) -> str:
    return f"{CHANNEL_PREFIX}{user_id}"


def user_of_channel(name: str) -> str | None:
    if not name.startswith(CHANNEL_PREFIX) or len(name) == len(CHANNEL_PREFIX):
        return None
    return name[len(CHANNEL_PREFIX) :]


@dataclass(frozen=True)
class ChannelMessage:
    """One message on a user's channel."""

    user_id: str
    type: MessageType
    data: dict[str, Any]
    # Wall-clock time of publishing, so a receiver can measure fan-out latency.
    sent_at: float = field(default_factory=time.time)
    # The change's number in the user's feed (or in the broadcasts' when ``broadcast``).
    seq: int | None = None
    # For every open stream of every user (SPEC section 9); ``user_id`` is then "".
    broadcast: bool = False
    # When the worker published the content event (Pub/Sub publishTime, epoch seconds), so the
    # stream can measure end-to-end delivery delay (the delivery SLO); None when unknown.
    published_at: float | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"type": self.type, "user_id": self.user_id, "data": self.data, "sent_at": self.sent_at}
        if self.seq is not None:
            body["seq"] = self.seq
        if self.broadcast:
            body["broadcast"] = True
        if self.published_at is not None:
            body["published_at"] = self.published_at
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def attributes(self) -> dict[str, str]:
        if self.broadcast:
            return {"channel": channel_name(ALL_INSTANCES), "broadcast": "true", "type": self.type}
        return {"channel": channel_name(self.user_id), "user_id": self.user_id, "type": self.type}

    @classmethod
    def decode(cls, data: bytes, attributes: Mapping[str, str] | None = None) -> ChannelMessage:
        """Parse a message; raises ValueError when it is not one of ours."""
        try:
            body = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise ValueError("channel message nested too deeply") from None
        if not isinstance(body, dict) or body.get("type") not in MESSAGE_TYPES:
            raise ValueError("not a channel message")
        user_id = body.get("user_id")
        broadcast = body.get("broadcast") is True
        if not isinstance(user_id, str) or not (user_id or broadcast) or not isinstance(body.get("data"), dict):
            raise ValueError("channel message without user_id or data")
        seq = body.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
            raise ValueError("channel message with a bad seq")
        if attributes and attributes.get("user_id") not in (None, user_id):
            raise ValueError("channel message whose attribute user_id contradicts its body")
        sent_at = body.get("sent_at")
        published_at = body.get("published_at")
        return cls(
            user_id=user_id,
            type=body["type"],
            data=body["data"],
            sent_at=float(sent_at) if isinstance(sent_at, int | float) else time.time(),
            seq=seq,
            broadcast=broadcast,
            published_at=float(published_at) if isinstance(published_at, int | float) else None,
        )


# Receives the messages of one delivery from the channel, in order, on the channel's thread.
BatchHandler = Callable[[Sequence[ChannelMessage]], None]
GapHandler = Callable[[], None]
# user ids -> the stream instances holding each one's streams (users without any may be left out);
# raises BackendUnavailable when it cannot tell.
Router = Callable[[Collection[str]], Mapping[str, Collection[str]]]


def route(messages: Sequence[ChannelMessage], router: Router | None) -> dict[str, list[ChannelMessage]]:
    """Which messages go to which stream instance (``ALL_INSTANCES``: to every one)."""
    if router is None:
        return {ALL_INSTANCES: list(messages)} if messages else {}
    users = {m.user_id for m in messages if not m.broadcast}
    try:
        where = router(users) if users else {}
    except BackendUnavailable as exc:
        logger.warning("connection registry unreadable; publishing to every instance", extra={"error": str(exc)})
        return {ALL_INSTANCES: list(messages)}
    targets: dict[str, list[ChannelMessage]] = {}
    for message in messages:
        instances = (ALL_INSTANCES,) if message.broadcast else where.get(message.user_id, ())
        for instance in instances:
            targets.setdefault(instance, []).append(message)
    return targets


class Subscription(ABC):
    """A stream instance's subscription: its users' messages and the broadcasts."""

    @abstractmethod
    def close(self, deadline: float | None = None) -> None:
        """Stop receiving and release what the subscription holds (idempotent).

        ``deadline`` (``time.monotonic()``) bounds the backend calls this makes:
        at shutdown a backend that is slow or gone must not hold the process.
        """

    @property
    @abstractmethod
    def name(self) -> str: ...

    def healthy(self) -> bool:
        return True


class Channel(ABC):
    """Publishes to users' channels and subscribes a stream instance to its users' messages."""

    def __init__(self, router: Router | None = None) -> None:
        self.router = router

    def publish_many(self, messages: Iterable[ChannelMessage]) -> None:
        """Publish every message to the instances that hold its user's streams, or raise BackendUnavailable."""
        failure: BackendUnavailable | None = None
        for target, batch in route(list(messages), self.router).items():
            try:
                self.send(target, batch)
            except BackendUnavailable as exc:
                failure = failure or exc  # the other instances still get theirs
        if failure is not None:
            raise failure

    @abstractmethod
    def send(self, target: str, messages: Sequence[ChannelMessage]) -> None:
        """Send ``messages`` to one stream instance (``ALL_INSTANCES``: every one), or raise BackendUnavailable."""

    @abstractmethod
    def subscribe(self, instance_id: str, handler: BatchHandler, on_gap: GapHandler | None = None) -> Subscription:
        """Deliver to ``handler`` every message sent from now on to ``instance_id`` or to every instance.

        ``instance_id`` names the stream instance that holds the subscription
        (the registry names the same instance). ``on_gap`` is called when
        messages may have been missed (the subscription had to be
        re-established), so holders of streams can replay from the store.
        """

    def subscription_name(self, instance_id: str) -> str:
        """The name ``subscribe(instance_id, ...)`` gives its subscription, known before it exists."""
        return ""

    def publish(self, message: ChannelMessage) -> None:
        self.publish_many([message])

    def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise BackendUnavailable when the channel cannot be used."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release clients (idempotent)."""

    # The Redis-shaped API that workers of the old design call.
    def publish_notification(self, user_id: str, payload: dict[str, Any]) -> bool:
        """Publish one notification on the user's channel; False when it failed."""
        return self.publish_batch([(user_id, payload)]) == 1

    def publish_batch(self, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Publish many notifications; returns how many were published."""
        messages = [ChannelMessage(user_id, "notification", payload) for user_id, payload in items]
        if not messages:
            return 0
        try:
            self.publish_many(messages)
        except BackendUnavailable:
            logger.warning("channel publish failed", extra={"count": len(messages)}, exc_info=True)
            return 0
        return len(messages)


class DeadLetterSink(ABC):
    """Where events that break the contract go, unchanged, with the reason."""

    @abstractmethod
    def send(self, data: bytes, attributes: Mapping[str, str]) -> None:
        """Publish, or raise BackendUnavailable."""
