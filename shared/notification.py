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
            "read": self.read,
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
        )


@dataclass(frozen=True)
class NewNotification:
    """A notification about to be stored for the first time: its id is minted now."""

    notification: Notification
    event_key: str
    expire_at: datetime


def build_notification(event: ContentEvent, retention_days: int, now: datetime | None = None) -> NewNotification:
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
        timestamp=iso(event.timestamp or created),
        created_at=iso(created),
        content_request_id=event.content_request_id,
        progress_percentage=event.progress_percentage,
        metadata=event.metadata,
    )
    return NewNotification(notification, key, created + timedelta(days=retention_days))
