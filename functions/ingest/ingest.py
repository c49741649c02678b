"""Turns one content event into one stored notification and a message on its user's channel.

Contract (SPEC section 2): an invalid event is dead-lettered with its reason and
acknowledged; a transient failure raises so Pub/Sub redelivers; an event that
keeps failing past EVENT_MAX_AGE_SECONDS is dead-lettered instead of retried
forever; any number of deliveries of one event yield one notification.

Beyond the contract's words, so that no event is retried forever:

- any failure while parsing or validating (also an exception validation did
  not foresee) is a dead letter: the same bytes fail the same way every time;
- a misconfigured backend (a missing topic or IAM binding: BackendMisconfigured)
  dead-letters the event with that reason, since redelivery cannot succeed
  before someone fixes the deployment (the event is replayed from there);
- the maximum age applies to every path, dead-lettering included: an event
  older than EVENT_MAX_AGE_SECONDS that cannot even be dead-lettered is
  acknowledged and kept in an ERROR log line ("content event abandoned":
  attributes, size, SHA-256 and the first 16 KiB of its body).

While the kill switch has ingest off (shared/killswitch.py), every event is
parked: republished unchanged to the dead-letter topic with ``error`` starting
"kill switch" and acknowledged, so nothing is stored or announced, nothing is
lost (``ops/replay_dead_letters.py --match "kill switch"`` brings it back), and
Pub/Sub does not redeliver the whole backlog for as long as the switch is off.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.backends import Backends
from shared.config import Settings
from shared.errors import BackendMisconfigured, BackendUnavailable, InvalidEventError
from shared.events import parse_event
from shared.feed import Verdict, change_message
from shared.killswitch import Switches
from shared.notification import build_notification

logger = logging.getLogger(__name__)

_MAX_ATTRIBUTE = 1024  # Pub/Sub's limit on an attribute value
_LOGGED_BODY_BYTES = 16 * 1024  # of an abandoned event; a log entry holds at most 256 KB


class Outcome(enum.Enum):
    STORED = "stored"  # a new notification
    UPDATED = "updated"  # collapsed into its content request's notification
    DUPLICATE = "duplicate"  # a redelivery: nothing changed, the change is announced again
    IGNORED = "ignored"  # older than the stored state, coalesced, or its notification was deleted
    DEAD_LETTERED = "dead_lettered"
    PARKED = "parked"
    # Too old to retry, and the dead-letter topic refused it too: kept in the log only.
    ABANDONED = "abandoned"


_OUTCOMES = {
    Verdict.CREATE: Outcome.STORED,
    Verdict.UPDATE: Outcome.UPDATED,
    Verdict.REDELIVERED: Outcome.DUPLICATE,
    Verdict.STALE: Outcome.IGNORED,
    Verdict.COALESCED: Outcome.IGNORED,
    Verdict.GONE: Outcome.IGNORED,
}


@dataclass(frozen=True)
class PubsubMessage:
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    publish_time: datetime | None = None


def message_from_cloud_event(data: Any) -> PubsubMessage:
    """The Pub/Sub message inside a CloudEvent's data; InvalidEventError if there is none."""
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise InvalidEventError("CloudEvent data has no Pub/Sub message")
    message = data["message"]
    raw = message.get("data") or ""
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        attributes = {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    publish_time = _parse_time(message.get("publishTime") or message.get("publish_time"))
    try:
        decoded = base64.b64decode(raw, validate=True) if isinstance(raw, str) else bytes(raw)
    except (binascii.Error, ValueError, TypeError):
        decoded = raw.encode("utf-8", "replace") if isinstance(raw, str) else b""
    return PubsubMessage(decoded, {str(k): str(v) for k, v in attributes.items()}, message_id, publish_time)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ingest(
    message: PubsubMessage,
    backends: Backends,
    settings: Settings,
    *,
    now: datetime | None = None,
) -> Outcome:
    """Process one delivery. Raises BackendUnavailable when Pub/Sub should redeliver."""
    now = now or datetime.now(UTC)
    switches = backends.killswitch.current()
    if not switches.ingest_enabled:
        return _park(message, backends, switches)
    try:
        event = parse_event(message.data, message.attributes, message.message_id)
        new = build_notification(event, settings.notification_retention_days, now, event_time=message.publish_time)
    except InvalidEventError as exc:
        return _give_up(message, backends, settings, now, str(exc))
    except Exception as exc:  # a validation gap is still the event's fault: never a retry
        logger.exception("validation raised unexpectedly", extra={"message_id": message.message_id})
        return _give_up(message, backends, settings, now, f"could not be validated: {type(exc).__name__}: {exc}")
    try:
        try:
            applied = backends.store.apply(new)
        except InvalidEventError as exc:
            return _give_up(message, backends, settings, now, str(exc))
        # Announced on redelivery too: the first attempt may have died between
        # its commit and its publish. A stream drops a change it has by number.
        # A muted change is logged (replay skips it) but costs no publish.
        change = applied.change
        if change is not None and not applied.muted:
            announced = change_message(event.user_id, change)
            if message.publish_time is not None:
                # The worker's publish time travels to the stream for the delivery SLO.
                announced = replace(announced, published_at=message.publish_time.timestamp())
            backends.channel.publish(announced)
    except BackendMisconfigured as exc:
        # Redelivery cannot succeed until the deployment is fixed; the dead letter can be replayed then.
        return _give_up(message, backends, settings, now, f"backend misconfigured: {exc}")
    except Exception as exc:
        # Transient failures (and bugs, which a redelivery may not fix) are retried
        # until the event is too old, then dead-lettered: nothing retries forever.
        age = _age(message, now)
        if age > settings.event_max_age_seconds:
            return _give_up(message, backends, settings, now, f"gave up after {age:.0f} s of failures: {exc}")
        if isinstance(exc, BackendUnavailable):
            logger.warning(
                "transient failure; Pub/Sub will redeliver",
                extra={"message_id": message.message_id, "error": str(exc)[:500], "age_seconds": round(age, 1)},
            )
        else:
            logger.exception("unexpected failure; Pub/Sub will redeliver", extra={"message_id": message.message_id})
        raise
    outcome = _OUTCOMES[applied.verdict]
    logger.info(
        f"content event {applied.verdict.value}",
        extra={
            "message_id": message.message_id,
            "notification_id": applied.notification.id if applied.notification else None,
            "user_id": event.user_id,
            "event_type": event.event_type,
            "change": change.seq if change is not None else None,
        },
    )
    return outcome


def ingest_cloud_event(
    data: Any, cloud_event_id: str, backends: Backends, settings: Settings, event_time: Any = None
) -> Outcome:
    """Process the CloudEvent of a Pub/Sub trigger (what functions-framework hands over).

    ``event_time`` (the CloudEvent's ``time``) dates a delivery whose message has no publish time.
    """
    try:
        message = message_from_cloud_event(data)
    except Exception as exc:  # noqa: BLE001 - an envelope that cannot be read never becomes readable
        reason = str(exc) if isinstance(exc, InvalidEventError) else f"unreadable CloudEvent: {type(exc).__name__}"
        empty = PubsubMessage(b"", {}, cloud_event_id, _parse_time(event_time))
        return _give_up(empty, backends, settings, datetime.now(UTC), reason)
    if message.publish_time is None:
        message = replace(message, publish_time=_parse_time(event_time))
    return ingest(message, backends, settings)


def _age(message: PubsubMessage, now: datetime) -> float:
    return (now - message.publish_time).total_seconds() if message.publish_time else 0.0


def _give_up(message: PubsubMessage, backends: Backends, settings: Settings, now: datetime, reason: str) -> Outcome:
    """Dead-letter the event; if that fails, raise for a redelivery, unless the event is too old for one."""
    try:
        _dead_letter(message, backends, reason)
    except Exception as exc:
        age = _age(message, now)
        if age <= settings.event_max_age_seconds:
            # Pub/Sub redelivers, and the dead letter is tried again: an event is never dropped silently.
            logger.warning(
                "dead-letter publish failed; Pub/Sub will redeliver",
                extra={"message_id": message.message_id, "error": repr(exc)[:500], "age_seconds": round(age, 1)},
            )
            raise
        _abandon(message, reason, exc, age)
        return Outcome.ABANDONED
    return Outcome.DEAD_LETTERED


def _abandon(message: PubsubMessage, reason: str, failure: BaseException, age: float) -> None:
    logger.error(
        "content event abandoned",
        extra={
            "message_id": message.message_id,
            "reason": reason[:_MAX_ATTRIBUTE],
            "dead_letter_error": repr(failure)[:_MAX_ATTRIBUTE],
            "age_seconds": round(age, 1),
            "attributes": message.attributes,
            "body_bytes": len(message.data),
            "body_sha256": hashlib.sha256(message.data).hexdigest(),
            "body_start": message.data[:_LOGGED_BODY_BYTES].decode("utf-8", "replace"),
        },
    )


def _dead_letter(message: PubsubMessage, backends: Backends, reason: str) -> None:
    logger.error(
        "invalid content event dead-lettered",
        extra={"message_id": message.message_id, "reason": reason[:_MAX_ATTRIBUTE]},
    )
    _send_to_dead_letters(message, backends, reason)


def _park(message: PubsubMessage, backends: Backends, switches: Switches) -> Outcome:
    reason = "kill switch: ingest switched off" + (f": {switches.reason}" if switches.reason else "")
    # WARNING, not ERROR: an operator's decision, not a failure (no error alert, no SLO burn).
    logger.warning("content event parked: ingest switched off", extra={"message_id": message.message_id})
    _send_to_dead_letters(message, backends, reason)
    return Outcome.PARKED


def _send_to_dead_letters(message: PubsubMessage, backends: Backends, reason: str) -> None:
    attributes = {k: v for k, v in message.attributes.items() if k not in {"error", "original_message_id"}}
    attributes["error"] = _truncate_utf8(reason, _MAX_ATTRIBUTE)
    if message.message_id:
        attributes["original_message_id"] = message.message_id[:_MAX_ATTRIBUTE]
    # What Pub/Sub cannot take as is (too large, too many attributes) the sink
    # trims and says so; if the topic cannot be reached at all this raises.
    backends.dead_letters.send(message.data, attributes)


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."
