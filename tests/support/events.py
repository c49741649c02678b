"""Content events for tests: a valid one, and a table of malformed ones."""

from __future__ import annotations

import json
import uuid
from typing import Any


def new_user(prefix: str = "user") -> str:
    """A user id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def valid_event(user_id: str = "u1", **overrides: Any) -> dict[str, Any]:
    """A completed video of its own content request (pass ``content_request_id`` to share one)."""
    event: dict[str, Any] = {
        "event_type": "content_generation.completed",
        "user_id": user_id,
        "title": "Video ready!",
        "message": "Your video is ready to watch.",
        "content_request_id": f"req_{uuid.uuid4().hex[:12]}",
        "progress_percentage": 100,
        "metadata": {"video_url": "https://example.invalid/v.mp4"},
        "timestamp": "2026-11-28T10:00:00Z",
        "event_id": f"evt-{uuid.uuid4().hex}",
    }
    event.update(overrides)
    return event


def _body(**overrides: Any) -> bytes:
    event = valid_event()
    for key, value in overrides.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return json.dumps(event).encode()


_DROP = object()
_HUGE_INTEGER = b'"n": ' + b"7" * 5000

# (case id, message data, attributes, words the reason must contain)
MALFORMED: list[tuple[str, bytes, dict[str, str], str]] = [
    ("empty body", b"", {}, "empty"),
    ("not json", b"this is not json", {}, "not JSON"),
    ("truncated json", b'{"event_type": "content_generation.completed", ', {}, "not JSON"),
    ("json array", b"[1, 2, 3]", {}, "JSON object"),
    ("json string", b'"hello"', {}, "JSON object"),
    ("json null", b"null", {}, "JSON object"),
    ("invalid utf-8", b'{"title": "\xff\xfe"}', {}, "UTF-8"),
    ("NaN constant", _body(progress_percentage=float("nan")).replace(b"NaN", b"NaN"), {}, "not JSON"),
    ("missing event_type", _body(event_type=_DROP), {}, "event_type is required"),
    ("event_type wrong type", _body(event_type=7), {}, "event_type must be a string"),
    ("unknown event_type", _body(event_type="content_generation.exploded"), {}, "not one of"),
    ("missing user_id", _body(user_id=_DROP), {}, "user_id is required"),
    ("user_id wrong type", _body(user_id=42), {}, "user_id must be a string"),
    ("empty user_id", _body(user_id=""), {}, "user_id must be 1-128"),
    ("user_id too long", _body(user_id="u" * 129), {}, "user_id must be 1-128"),
    ("slash in user_id", _body(user_id="a/b"), {}, "must not contain '/'"),
    ("reserved user_id", _body(user_id="__x__"), {}, "reserved"),
    ("attribute contradicts body", _body(), {"user_id": "someone-else"}, "contradicts"),
    ("slash in attribute user_id", _body(user_id=_DROP), {"user_id": "a/b"}, "attribute user_id"),
    ("missing title", _body(title=_DROP), {}, "title is required"),
    ("empty title", _body(title=""), {}, "title must be 1-200"),
    ("title 201 chars", _body(title="t" * 201), {}, "title must be 1-200"),
    ("title wrong type", _body(title=["a"]), {}, "title must be a string"),
    ("missing message", _body(message=_DROP), {}, "message is required"),
    ("message too long", _body(message="m" * 2001), {}, "message must be 0-2000"),
    ("progress 101", _body(progress_percentage=101), {}, "progress_percentage must be 0-100"),
    ("progress -1", _body(progress_percentage=-1), {}, "progress_percentage must be 0-100"),
    ("progress float", _body(progress_percentage=50.5), {}, "progress_percentage must be an integer"),
    ("progress bool", _body(progress_percentage=True), {}, "progress_percentage must be an integer"),
    ("progress string", _body(progress_percentage="50"), {}, "progress_percentage must be an integer"),
    ("metadata array", _body(metadata=[1]), {}, "metadata must be an object"),
    ("metadata over 16 KiB", _body(metadata={"blob": "x" * (16 * 1024)}), {}, "at most 16384 bytes"),
    ("metadata too deep", _body(metadata=json.loads('{"a":' * 25 + "1" + "}" * 25)), {}, "deeper"),
    ("metadata huge int", _body(metadata={"n": 2**70}), {}, "64 bits"),
    ("content_request_id wrong type", _body(content_request_id=5), {}, "content_request_id must be"),
    ("timestamp not iso", _body(timestamp="yesterday"), {}, "not ISO 8601"),
    ("timestamp wrong type", _body(timestamp=1700000000), {}, "timestamp must be"),
    # Valid ISO 8601 whose UTC time falls outside years 1-9999 (OverflowError, once retried forever).
    ("timestamp before year 1 in UTC", _body(timestamp="0001-01-01T00:00:00+01:00"), {}, "outside years 1-9999"),
    ("timestamp after year 9999 in UTC", _body(timestamp="9999-12-31T23:59:59-01:00"), {}, "outside years 1-9999"),
    # Python refuses to parse an integer of more than 4,300 digits (ValueError, once retried forever).
    ("metadata integer of 5,000 digits", _body(metadata={"n": 0}).replace(b'"n": 0', _HUGE_INTEGER), {}, "digits"),
    ("metadata number 1e400", _body(metadata={"n": 0}).replace(b'"n": 0', b'"n": 1e400'), {}, "64-bit float"),
    ("event_id wrong type", _body(event_id=12), {}, "event_id must be"),
    ("unknown field", _body(surprise=True), {}, "unknown field"),
    ("lone surrogate in title", _body(title="\ud800"), {}, "lone surrogate"),
    ("lone surrogate in metadata key", _body(metadata={"\udfff": 1}), {}, "lone surrogate"),
]
