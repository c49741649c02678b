"""Where notifications live: the interface every backend implements.

A user's feed is their notifications plus the broadcasts (stored once, with
the user's read/deleted state kept per user), and a change log: every change
has a number in the user's sequence (or, for a new broadcast, in the
broadcasts' sequence). See shared/feed.py for the rules both backends follow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from shared.feed import Applied, Change, FeedHead
from shared.notification import NewNotification, Notification

MAX_PAGE = 100


@dataclass(frozen=True)
class Page:
    notifications: list[Notification]
    next_cursor: str | None


class NotificationStore(ABC):
    """Per-user feeds, ordered by id. Every method may raise BackendUnavailable."""

    @abstractmethod
    def apply(self, new: NewNotification) -> Applied:
        """Apply one event: create its notification, collapse it into its request's one, or do nothing.

        Idempotent: the same event applied any number of times is one change.
        A notification its user deleted is never resurrected by a later event.
        A broadcast (``new.notification.broadcast``) is stored once for everyone.
        """

    @abstractmethod
    def page(self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False) -> Page:
        """Newest first, the user's notifications and the broadcasts they have not deleted.

        ``cursor`` is the id after which the page starts.
        """

    @abstractmethod
    def head(self, user_id: str, broadcast_seq: int | None = None) -> FeedHead:
        """The numbers of the user's last change and of the last broadcast, and the user's mutes.

        ``broadcast_seq``: a broadcast number the caller may use as the head
        (it receives every later broadcast live); the broadcast head is then
        not read and this number stands in its place.
        """

    @abstractmethod
    def changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        """Oldest first, the user's changes numbered above ``after_seq`` (expired ones are gone)."""

    @abstractmethod
    def broadcast_changes(self, user_id: str, after_seq: int, limit: int) -> list[Change]:
        """Oldest first, the broadcasts numbered above ``after_seq`` as this user sees them.

        A broadcast the user has deleted comes as a ``notification.deleted`` of its id.
        """

    @abstractmethod
    def unread_count(self, user_id: str) -> int:
        """Unread notifications and broadcasts, not counting the user's muted event types."""

    def page_and_unread_count(
        self, user_id: str, limit: int, cursor: str | None = None, unread_only: bool = False
    ) -> tuple[Page, int]:
        """``page`` and ``unread_count`` as of one moment.

        Read one after the other they can disagree about a notification
        committed in between (a page without it, a count with it), and a client
        that reconciles the two with what its stream delivered counts it twice.
        """
        return self.page(user_id, limit, cursor, unread_only), self.unread_count(user_id)

    @abstractmethod
    def set_read(self, user_id: str, ids: list[str] | None, read: bool) -> list[Change]:
        """Mark the given ids (None: all) read or unread; the changes made (empty: nothing changed)."""

    @abstractmethod
    def delete(self, user_id: str, notification_id: str) -> Change | None:
        """Delete one notification (or hide one broadcast for this user); None when there is none."""

    @abstractmethod
    def delete_all(self, user_id: str) -> tuple[int, Change | None]:
        """Delete every notification of the user (and hide every broadcast): how many, and the change."""

    @abstractmethod
    def muted(self, user_id: str) -> frozenset[str]:
        """The event types the user muted (SPEC section 10)."""

    @abstractmethod
    def set_muted(self, user_id: str, event_types: frozenset[str]) -> frozenset[str]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise BackendUnavailable when the store cannot be used."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release clients (idempotent)."""
