"""A user's feed: the collapse rule of SPEC section 3 and the change log of section 4.

Both stores (Firestore, memory) apply the same rules from here.

Collapse: events that carry one content request id for one user update one
notification. Its state is that of the "latest" event, ordered by
``state_order``: a terminal event (completed, failed) beats every intermediate
one, then the later ``timestamp``, then the further step, then the higher
progress. An event that does not order strictly after the stored state
changes nothing, so a redelivery (equal) and a late progress (older, or after
completion) are one no-op each.

Change log: every change of a user's feed (a new or collapsed notification, a
read/unread, a deletion) gets the next number of a per-user sequence that is
incremented in the same transaction as the change, so numbers follow commit
order and have no holes. A reader holding change n that receives n + 2 knows
n + 1 exists, is committed (n + 2's transaction read the counter n + 1 wrote)
and can be read from the log. Broadcasts have a sequence of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.channel import ChannelMessage
from shared.notification import Notification, iso

ChangeType = Literal["notification", "notification.updated", "notification.deleted"]

TERMINAL = frozenset({"content_generation.completed", "content_generation.failed"})
_STEP = {
    "content_request.created": 0,
    "content_request.queued": 1,
    "content_generation.started": 2,
    "content_generation.progress": 3,
    "content_generation.completed": 4,
    "content_generation.failed": 4,
}
# An intermediate event of the same type as the stored state whose timestamp is
# less than this many seconds after the stored state's is dropped without a
# write: a request's progress is written at most once per second of its own
# time. Firestore sustains about one write per second per document; a worker
# reporting progress 10 times a second would otherwise be throttled (and would
# contend on the user's change counter). Type changes and the end always land.
COALESCE_SECONDS = 1.0
# How long the change log keeps a change: replay reaches this far back at most
# (and at most SSE_MAX_BACKLOG_MESSAGES changes); older cursors get replay.truncated.
CHANGE_RETENTION = timedelta(days=7)


class Verdict(enum.Enum):
    CREATE = "created"  # a new notification
    UPDATE = "updated"  # the request's notification takes this event's state
    REDELIVERED = "redelivered"  # the stored state came from this very event
    STALE = "stale"  # older than (or equal to) the stored state: nothing changes
    COALESCED = "coalesced"  # newer, but too soon after the last write of the same kind
    GONE = "gone"  # its notification was deleted by the user: never resurrected


@dataclass(frozen=True)
class Change:
    """One entry of a feed's change log, as the stream sends it."""

    seq: int
    type: ChangeType
    data: dict[str, Any]
    # The notification's event type for ``notification`` changes (mutes apply to it).
    event_type: str | None = None
    broadcast: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "data": self.data, "event_type": self.event_type}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, broadcast: bool = False) -> Change:
        return cls(int(data["seq"]), data["type"], dict(data["data"]), data.get("event_type"), broadcast)


@dataclass(frozen=True)
class Applied:
    """What applying one event did."""

    verdict: Verdict
    notification: Notification | None = None
    # The change to announce on the channel (also for REDELIVERED: the first
    # attempt may have died between its commit and its publish).
    change: Change | None = None
    # The user mutes this event type: stored, logged, not announced.
    muted: bool = False

    @property
    def stored(self) -> bool:
        return self.verdict in (Verdict.CREATE, Verdict.UPDATE)


@dataclass(frozen=True)
class FeedHead:
    """Where a user's feed stands: the last change numbers and the user's mutes."""

    user_seq: int
    broadcast_seq: int
    muted_event_types: frozenset[str] = field(default_factory=frozenset)


def state_order(n: Notification) -> tuple[bool, str, int, int]:
    return (n.event_type in TERMINAL, n.timestamp, _STEP.get(n.event_type, 0), n.progress_percentage or -1)


def decide(stored: Notification | None, stored_source: str | None, new: Notification, event_key: str) -> Verdict:
    """What an event does to the notification its key names (``stored``; None: the user deleted it)."""
    if stored is None:
        return Verdict.GONE
    if stored_source == event_key:
        return Verdict.REDELIVERED
    if state_order(new) <= state_order(stored):
        return Verdict.STALE
    if new.event_type not in TERMINAL and new.event_type == stored.event_type:
        # By the events' own times, not the arrival time: the rule gives the same
        # answer however fast or late the deliveries come, and a worker reporting
        # in real time gets at most one write per COALESCE_SECONDS.
        before, after = _parse(stored.timestamp), _parse(new.timestamp)
        if before is not None and after is not None and (after - before).total_seconds() < COALESCE_SECONDS:
            return Verdict.COALESCED
    return Verdict.UPDATE


def collapsed(stored: Notification, new: Notification, now: datetime) -> Notification:
    """The stored notification with ``new``'s state: same id, unread again only when it ends."""
    return replace(
        new,
        id=stored.id,
        user_id=stored.user_id,
        created_at=stored.created_at,
        updated_at=iso(now),
        read=False if new.event_type in TERMINAL else stored.read,
    )


def notification_change(seq: int, notification: Notification) -> Change:
    return Change(seq, "notification", notification.to_dict(), notification.event_type, notification.broadcast)


def updated_change(seq: int, ids: list[str], read: bool) -> Change:
    return Change(seq, "notification.updated", {"ids": ids, "read": read})


def deleted_change(seq: int, ids: list[str] | None) -> Change:
    return Change(seq, "notification.deleted", {"all": True} if ids is None else {"ids": ids})


def as_seen_by(broadcast: Notification, user_id: str, read: bool) -> Notification:
    """A broadcast (stored once, user_id "") as one user's notification, with their read state."""
    return replace(broadcast, user_id=user_id, read=read)


def broadcast_as_change(seq: int, broadcast: Notification, user_id: str, state: str | None) -> Change:
    """Broadcast number ``seq`` as ``user_id`` sees it; ``state`` is theirs: None, "read" or "deleted"."""
    if state == "deleted":
        return Change(seq, "notification.deleted", {"ids": [broadcast.id]}, broadcast=True)
    seen = as_seen_by(broadcast, user_id, state == "read")
    return Change(seq, "notification", seen.to_dict(), seen.event_type, broadcast=True)


def change_message(user_id: str, change: Change) -> ChannelMessage:
    """The channel message announcing one change of ``user_id``'s feed, or a new broadcast."""
    if change.broadcast:
        return ChannelMessage("", change.type, change.data, seq=change.seq, broadcast=True)
    return ChannelMessage(user_id, change.type, change.data, seq=change.seq)


def _parse(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
