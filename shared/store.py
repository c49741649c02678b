"""Where notifications live: the interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from shared.notification import NewNotification, Notification

MAX_PAGE = 100


@dataclass(frozen=True)
class Page:
    notifications: list[Notification]
    next_cursor: str | None


class NotificationStore(ABC):
    """Per-user notifications, ordered by id. Every method may raise BackendUnavailable."""

    @abstractmethod
    def persist(self, new: NewNotification) -> tuple[Notification | None, bool]:
        """Store ``new`` unless its event was stored before.

        Returns the stored notification and whether this call created it. A
        notification whose event was stored before but which its user has since
        deleted comes back as None: a redelivery never resurrects it.
        """

    @abstractmethod
    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        """Newest first; ``cursor`` is the id after which the page starts."""

    @abstractmethod
    def after(self, user_id: str, after_id: str, limit: int) -> list[Notification]:
        """Oldest first, every notification with an id greater than ``after_id``."""

    @abstractmethod
    def unread_count(self, user_id: str) -> int: ...

    @abstractmethod
    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[str]:
        """Mark the given ids (None: all) read or unread; returns the ids that changed."""

    @abstractmethod
    def delete(self, user_id: str, notification_id: str) -> bool: ...

    @abstractmethod
    def delete_all(self, user_id: str) -> int: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise BackendUnavailable when the store cannot be used."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release clients (idempotent)."""
