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

import asyncio
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from shared.errors import BackendUnavailable

CHANNEL_PREFIX = "notifications:channel:"
# The ``format`` attribute of a message whose data is the notification's body as
# the stream sends it (``ascii_json``), its envelope in the other attributes.
DATA_FORMAT = "sse-data"
# The routing target that reaches every stream instance.
ALL_INSTANCES = "*"

MessageType = Literal["notification", "notification.updated", "notification.deleted"]
MESSAGE_TYPES: frozenset[str] = frozenset({"notification", "notification.updated", "notification.deleted"})

logger = logging.getLogger(__name__)
_JSON = json.JSONDecoder()


def ascii_json(data: Any) -> str:
    """JSON on one line of printable ASCII: what an SSE ``data:`` line carries.

    ``ensure_ascii`` escapes CR, LF, NUL, U+2028/U+2029 and lone surrogates, so no
    text can end a field or an event early or make the UTF-8 encoding fail.
    """
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


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

    # The data as ``ascii_json`` bytes, when known: a received message streams it as
    # it came, with no encode of its own. ``replace(..., data=...)`` must pass wire=None.
    wire: bytes | None = field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        """The message's Pub/Sub data (``pubsub_message`` gives it with its attributes)."""
        return self.pubsub_message()[0]

    def attributes(self) -> dict[str, str]:
        return self.pubsub_message()[1]

    def pubsub_message(self) -> tuple[bytes, dict[str, str]]:
        """Pub/Sub data and attributes: the data as streamed, the envelope in attributes."""
        if self.broadcast:
            names = {"channel": channel_name(ALL_INSTANCES), "broadcast": "true", "type": self.type}
        else:
            names = {"channel": channel_name(self.user_id), "user_id": self.user_id, "type": self.type}
        body = self._body()
        if body is None:
            return self._legacy_envelope(), names
        names["format"] = DATA_FORMAT
        names["sent_at"] = repr(self.sent_at)
        if self.seq is not None:
            names["seq"] = str(self.seq)
        if self.published_at is not None:
            names["published_at"] = repr(self.published_at)
        return body, names

    def _body(self) -> bytes | None:
        """The data in DATA_FORMAT; None when the message must go as the older JSON envelope.

        That is when the data names another user than the one it is routed to
        (receivers drop it, and must see the data to), or holds a value JSON
        cannot carry (NaN): both bugs of a publisher, kept out of the fast path.
        """
        if self.wire is not None:
            return self.wire
        if not self.broadcast and self.data.get("user_id", self.user_id) != self.user_id:
            return None
        try:
            return ascii_json(self.data).encode("ascii")
        except ValueError:
            return None

    def _legacy_envelope(self) -> bytes:
        body: dict[str, Any] = {"type": self.type, "user_id": self.user_id, "data": self.data, "sent_at": self.sent_at}
        if self.seq is not None:
            body["seq"] = self.seq
        if self.broadcast:
            body["broadcast"] = True
        if self.published_at is not None:
            body["published_at"] = self.published_at
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, attributes: Mapping[str, str] | None = None) -> ChannelMessage:
        """Parse a message; raises ValueError when it is not one of ours."""
        if attributes and attributes.get("format") == DATA_FORMAT:
            return cls._decode_data_format(data, attributes)
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

    @classmethod
    def _decode_data_format(cls, data: bytes, attributes: Mapping[str, str]) -> ChannelMessage:
        kind = attributes.get("type")
        if kind not in MESSAGE_TYPES:
            raise ValueError("not a channel message")
        broadcast = attributes.get("broadcast") == "true"
        user_id = "" if broadcast else attributes.get("user_id", "")
        if not (user_id or broadcast):
            raise ValueError("channel message without user_id")
        seq_text = attributes.get("seq")
        if seq_text is not None and not (seq_text.isdigit() and seq_text.isascii() and int(seq_text) >= 1):
            raise ValueError("channel message with a bad seq")
        # Streamed as it is, so it must be one line of ASCII. JSON (strict) refuses
        # any other control character inside a string and a NUL outside one.
        if not data.isascii() or b"\n" in data or b"\r" in data:
            raise ValueError("channel message data is not one line of ASCII JSON")
        try:
            # ASCII, as checked: json.loads would first look for the bytes' encoding.
            body = _JSON.decode(data.decode("ascii"))
        except RecursionError:
            raise ValueError("channel message nested too deeply") from None
        if not isinstance(body, dict):
            raise ValueError("channel message without data")
        return cls(
            user_id=user_id,
            type=cast(MessageType, kind),
            data=body,
            sent_at=_seconds(attributes.get("sent_at")) or time.time(),
            seq=int(seq_text) if seq_text is not None else None,
            broadcast=broadcast,
            published_at=_seconds(attributes.get("published_at")),
            wire=data,
        )


def _seconds(text: str | None) -> float | None:
    """An epoch-seconds attribute; None when absent or not a finite number."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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
    def subscribe(
        self,
        instance_id: str,
        handler: BatchHandler,
        on_gap: GapHandler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Subscription:
        """Deliver to ``handler`` every message sent from now on to ``instance_id`` or to every instance.

        ``instance_id`` names the stream instance that holds the subscription
        (the registry names the same instance). ``on_gap`` is called when
        messages may have been missed (the subscription had to be
        re-established), so holders of streams can replay from the store.
        ``loop``, when given and running, is where the subscription may do its
        receiving (and call ``handler``), so the messages need no thread hop to
        reach what runs there.
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
