"""Notification ids: fixed-width lowercase hex, so string order is time order.

An id is the persistence time in microseconds (14 hex digits, enough until the
year 4253) followed by 10 hex digits of a hash of the event key, which keeps two
events persisted in the same microsecond apart. Ids are minted once, when a
notification is first stored; redeliveries find the stored id through the
event key, so the id is stable.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid

ID_LENGTH = 24
_ID_PATTERN = re.compile(r"[0-9a-f]{24}")
_lock = threading.Lock()
_last_micros = 0


def event_key(user_id: str, event_id: str) -> str:
    """A Firestore-safe document id for the idempotency key of an event."""
    return hashlib.sha256(f"{user_id}\x00{event_id}".encode()).hexdigest()[:40]


def request_key(user_id: str, content_request_id: str) -> str:
    """The collapse key of a content request: one notification per (user, request).

    An ``r`` and 39 hex digits, so it can never equal an event key (40 hex digits)
    in the collection both live in.
    """
    return "r" + hashlib.sha256(f"{user_id}\x00{content_request_id}".encode()).hexdigest()[:39]


def _next_micros(now_micros: int | None) -> int:
    global _last_micros
    with _lock:
        candidate = now_micros if now_micros is not None else time.time_ns() // 1000
        # Strictly increasing within the process, even if the clock steps back.
        _last_micros = max(candidate, _last_micros + 1)
        return _last_micros


def format_id(micros: int, key: str) -> str:
    return f"{micros:014x}{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def mint_id(key: str, now_micros: int | None = None) -> str:
    return format_id(_next_micros(now_micros), key)


def id_micros(notification_id: str) -> int:
    return int(notification_id[:14], 16)


def is_valid_id(value: str) -> bool:
    return bool(_ID_PATTERN.fullmatch(value))


_CURSOR_PATTERN = re.compile(r"([0-9a-f]{1,15})-([0-9a-f]{1,15})")


def format_cursor(user_seq: int, broadcast_seq: int) -> str:
    """A position in a user's feed: how many of the user's changes and of the broadcasts it has seen.

    Both are dense sequence numbers (see shared/feed.py), so a reader that holds
    change n and receives n + 2 knows it is missing n + 1.
    """
    return f"{user_seq:x}-{broadcast_seq:x}"


def parse_cursor(value: str) -> tuple[int, int] | None:
    """The (user, broadcast) positions of a cursor, or None when it is not one."""
    match = _CURSOR_PATTERN.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16)


def new_instance_id() -> str:
    """A stream instance's id: readable (host, pid) and unique (random suffix)."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:30].strip("-") or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
