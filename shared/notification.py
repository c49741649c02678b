"""The notification of SPEC section 3, the thing clients see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import ids
from shared.events import ContentEvent


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a Z, as SPEC shows."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Notification:
    id: str
    event_type: str
    user_id: str
    title: str
    message: str
    timestamp: str
    created_at: str
    content_request_id: str | None = None
    progress_percentage: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    read: bool = False
    # When its state last changed (a collapsed event, read or unread); created_at until then.
    updated_at: str = ""
    # A broadcast (SPEC section 9): stored once, shown to every user.
    broadcast: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "user_id": self.user_id,
            "content_request_id": self.content_request_id,
            "title": self.title,
            "message": self.message,
            "progress_percentage": self.progress_percentage,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "read": self.read,
            **({"audience": "all"} if self.broadcast else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(
            id=data["id"],
            event_type=data["event_type"],
            user_id=data["user_id"],
            title=data["title"],
            message=data["message"],
            timestamp=data["timestamp"],
            created_at=data["created_at"],
            content_request_id=data.get("content_request_id"),
            progress_percentage=data.get("progress_percentage"),
            metadata=dict(data.get("metadata") or {}),
            read=bool(data.get("read", False)),
            updated_at=str(data.get("updated_at") or data["created_at"]),
            broadcast=data.get("audience") == "all" or bool(data.get("broadcast", False)),
        )


@dataclass(frozen=True)
class NewNotification:
    """An event about to be applied: a new notification, or an update of its request's one.

    ``notification.id`` is minted now and used only when the event creates the
    notification; an event that collapses into an existing one keeps that one's id.
    """

    notification: Notification
    # This event's idempotency key (user, event_id).
    event_key: str
    # The document of ``event_keys`` that names the notification: the request's
    # collapse key when the event has a content_request_id, else ``event_key``.
    key: str
    expire_at: datetime


def build_notification(
    event: ContentEvent,
    retention_days: int,
    now: datetime | None = None,
    *,
    event_time: datetime | None = None,
) -> NewNotification:
    """``event_time`` stands in for a missing ``timestamp`` (the Pub/Sub publish time: the same on
    every redelivery, so a redelivered event compares equal to itself)."""
    now = now or datetime.now(UTC)
    key = ids.event_key(event.user_id, event.event_id)
    notification_id = ids.mint_id(key, int(now.timestamp() * 1_000_000))
    created = datetime.fromtimestamp(ids.id_micros(notification_id) / 1_000_000, UTC)
    notification = Notification(
        id=notification_id,
        event_type=event.event_type,
        user_id=event.user_id,
        title=event.title,
        message=event.message,
        timestamp=iso(event.timestamp or event_time or created),
        created_at=iso(created),
        updated_at=iso(created),
        content_request_id=event.content_request_id,
        progress_percentage=event.progress_percentage,
        metadata=event.metadata,
        broadcast=event.audience == "all",
    )
    collapse = (
        ids.request_key(event.user_id, event.content_request_id)
        if event.content_request_id is not None and event.audience != "all"
        else key
    )
    return NewNotification(notification, key, collapse, created + timedelta(days=retention_days))
