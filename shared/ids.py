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


def new_instance_id() -> str:
    """A stream instance's id: readable (host, pid) and unique (random suffix)."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:30].strip("-") or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
