"""The live channel: what the Redis pub/sub of the old design did, on any backend.

A message published on ``notifications:channel:{user_id}`` reaches every stream
of that user connected at that moment and no stream of any other user. The
envelope names what happened (a new notification, or a change to some) so one
subscription per process carries everything a browser needs to stay in step.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.errors import BackendUnavailable

CHANNEL_PREFIX = "notifications:channel:"

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
    # When the worker published the content event (Pub/Sub publishTime, epoch seconds), so the
    # stream can measure end-to-end delivery delay (the delivery SLO); None when unknown.
    published_at: float | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {"type": self.type, "user_id": self.user_id, "data": self.data, "sent_at": self.sent_at}
            | ({} if self.published_at is None else {"published_at": self.published_at}),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")

    def attributes(self) -> dict[str, str]:
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
        if not isinstance(user_id, str) or not user_id or not isinstance(body.get("data"), dict):
            raise ValueError("channel message without user_id or data")
        if attributes and attributes.get("user_id") not in (None, user_id):
            raise ValueError("channel message whose attribute user_id contradicts its body")
        sent_at = body.get("sent_at")
        published_at = body.get("published_at")
        return cls(
            user_id=user_id,
            type=body["type"],
            data=body["data"],
            sent_at=float(sent_at) if isinstance(sent_at, int | float) else time.time(),
            published_at=float(published_at) if isinstance(published_at, int | float) else None,
        )


MessageHandler = Callable[[ChannelMessage], None]
GapHandler = Callable[[], None]


class Subscription(ABC):
    """A process's subscription to every user's channel."""

    @abstractmethod
    def close(self) -> None:
        """Stop receiving and release what the subscription holds (idempotent)."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    def healthy(self) -> bool:
        return True


class Channel(ABC):
    """Publishes to users' channels and subscribes a process to all of them."""

    @abstractmethod
    def publish_many(self, messages: Iterable[ChannelMessage]) -> None:
        """Publish every message, or raise BackendUnavailable."""

    @abstractmethod
    def subscribe(self, instance_id: str, handler: MessageHandler, on_gap: GapHandler | None = None) -> Subscription:
        """Deliver every message published from now on to ``handler``.

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
