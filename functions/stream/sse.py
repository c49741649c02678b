"""Server-Sent Events framing.

Every ``data:`` line is one line of ASCII-only JSON (``shared.channel.ascii_json``,
which channel messages carry already encoded): no notification text can end a
field or an event early or make the UTF-8 encoding fail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.channel import ascii_json
from shared.notification import iso


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One SSE event; ``event_id`` must be a plain token (notification ids are hex)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {ascii_json(data)}\n\n".encode("ascii")


def retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode("ascii")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def heartbeat() -> bytes:
    return frame("heartbeat", {"timestamp": now_iso()})


def closing(reason: str) -> bytes:
    return frame("stream.closing", {"reason": reason})


def established(connection_id: str, user_id: str, heartbeat_interval: float, retry_ms: int) -> bytes:
    data = {
        "connection_id": connection_id,
        "user_id": user_id,
        "heartbeat_interval": heartbeat_interval,
        "server_time": now_iso(),
    }
    return retry(retry_ms) + frame("connection.established", data)
