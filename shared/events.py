"""The content event of SPEC section 2: parsing and validation.

Validation names the field and the rule it breaks, because that reason goes to
the dead-letter topic where a person reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidEventError

EVENT_TYPES = frozenset(
    {
        "content_request.created",
        "content_request.queued",
        "content_generation.started",
        "content_generation.progress",
        "content_generation.completed",
        "content_generation.failed",
        "system.maintenance",
        "system.update",
        "user.session_expires_soon",
    }
)

MAX_USER_ID = 128
MAX_TITLE = 200
MAX_MESSAGE = 2000
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 19
MAX_EVENT_ID = 500
MAX_CONTENT_REQUEST_ID = 500
_KNOWN_FIELDS = frozenset(
    {
        "event_type",
        "user_id",
        "title",
        "message",
        "content_request_id",
        "progress_percentage",
        "metadata",
        "timestamp",
        "event_id",
        "audience",
    }
)
AUDIENCES = ("user", "all")


@dataclass(frozen=True)
class ContentEvent:
    event_type: str
    user_id: str
    title: str
    message: str
    event_id: str
    content_request_id: str | None = None
    progress_percentage: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    # "all": a broadcast (SPEC section 9), whose user_id is "".
    audience: str = "user"


def validate_user_id(user_id: object, source: str = "user_id") -> str:
    if not isinstance(user_id, str):
        raise InvalidEventError(f"{source} must be a string, got {_type_name(user_id)}")
    if not 1 <= len(user_id) <= MAX_USER_ID:
        raise InvalidEventError(f"{source} must be 1-{MAX_USER_ID} characters, got {len(user_id)}")
    if not _is_unicode(user_id):
        # A lone surrogate (JSON's "\ud800") is no text: Firestore's client cannot encode it.
        raise InvalidEventError(f"{source} contains a lone surrogate (not valid Unicode)")
    if "/" in user_id:
        raise InvalidEventError(f"{source} must not contain '/'")
    if user_id in {".", ".."} or (user_id.startswith("__") and user_id.endswith("__")):
        raise InvalidEventError(f"{source} {user_id!r} is reserved by Firestore")
    if any(ord(c) < 32 or ord(c) == 127 for c in user_id):
        raise InvalidEventError(f"{source} must not contain control characters")
    return user_id


def parse_event(data: bytes, attributes: Mapping[str, str], message_id: str) -> ContentEvent:
    """Validate one Pub/Sub message against SPEC section 2.

    Raises InvalidEventError with the reason when it breaks any rule.
    """
    if not data:
        raise InvalidEventError("message data is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(f"message data is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEventError(f"message data is not JSON: {exc}") from None
    except ValueError as exc:
        # Python caps the digits of an integer it parses (4,300): a number of 5,000 digits lands here.
        raise InvalidEventError(f"message data is not JSON this service reads: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise InvalidEventError(f"message data must be a JSON object, got {_type_name(body)}")
    _check_unicode(body, "event")
    unknown = sorted(set(body) - _KNOWN_FIELDS)
    if unknown:
        raise InvalidEventError(f"unknown field(s): {', '.join(unknown)[:200]}")

    event_type = _required_string(body, "event_type", 1, 100)
    if event_type not in EVENT_TYPES:
        raise InvalidEventError(f"event_type {event_type[:100]!r} is not one of the known types")

    audience = _audience(body, attributes)
    user_id = _user_id(body, attributes) if audience == "user" else _no_user_id(body, attributes)
    title = _required_string(body, "title", 1, MAX_TITLE)
    message = _required_string(body, "message", 0, MAX_MESSAGE)
    content_request_id = _optional_string(body, "content_request_id", MAX_CONTENT_REQUEST_ID)
    progress = _progress(body)
    metadata = _metadata(body)
    timestamp = _timestamp(body)
    event_id = _optional_string(body, "event_id", MAX_EVENT_ID)
    if event_id is None:
        event_id = attributes.get("event_id") or message_id
    if not event_id:
        raise InvalidEventError("event has no event_id and the message has no id")
    return ContentEvent(
        event_type=event_type,
        user_id=user_id,
        title=title,
        message=message,
        event_id=event_id,
        content_request_id=content_request_id,
        progress_percentage=progress,
        metadata=metadata,
        timestamp=timestamp,
        audience=audience,
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_unicode(value: Any, path: str) -> None:
    """JSON may escape lone surrogates (\\ud800), which no UTF-8 store or browser can carry."""
    if isinstance(value, str):
        if not _is_unicode(value):
            raise InvalidEventError(f"{path[:100]} contains a lone surrogate (not valid Unicode)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, f"{path} key")
            _check_unicode(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_unicode(item, f"{path}[{index}]")


def _reject_constant(name: str) -> Any:
    # json accepts NaN and Infinity, which no browser's JSON.parse does.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON that Python reads as inf, which JSON.parse in a browser cannot read back.
    value = float(text)
    if not math.isfinite(value):
        raise InvalidEventError(f"number {text[:30]} is out of the range of a 64-bit float")
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )


def _required_string(body: Mapping[str, Any], name: str, minimum: int, maximum: int) -> str:
    if name not in body:
        raise InvalidEventError(f"{name} is required")
    value = body[name]
    if not isinstance(value, str):
        raise InvalidEventError(f"{name} must be a string, got {_type_name(value)}")
    if not minimum <= len(value) <= maximum:
        raise InvalidEventError(f"{name} must be {minimum}-{maximum} characters, got {len(value)}")
    if minimum and not value.strip():
        raise InvalidEventError(f"{name} must not be blank")
    return value


def _optional_string(body: Mapping[str, Any], name: str, maximum: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"{name} must be a string or null, got {_type_name(value)}")
    if not 1 <= len(value) <= maximum:
        raise InvalidEventError(f"{name} must be 1-{maximum} characters, got {len(value)}")
    return value


def _user_id(body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
    in_body = body.get("user_id")
    in_attributes = attributes.get("user_id")
    if in_body is None and in_attributes is None:
        raise InvalidEventError("user_id is required (in the body or as message attribute user_id)")
    if in_body is not None:
        validate_user_id(in_body)
    if in_attributes is not None:
        validate_user_id(in_attributes, "attribute user_id")
    if in_body is not None and in_attributes is not None and in_body != in_attributes:
        raise InvalidEventError("attribute user_id contradicts body user_id")
    return in_body if in_body is not None else in_attributes  # type: ignore[return-value]


def _audience(body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
    value = body.get("audience")
    if value is not None and value not in AUDIENCES:
        raise InvalidEventError(f"audience must be \"user\" or \"all\", got {str(value)[:50]!r}")
    in_attributes = attributes.get("audience")
    if in_attributes is not None and in_attributes not in AUDIENCES:
        raise InvalidEventError(f"attribute audience must be \"user\" or \"all\", got {in_attributes[:50]!r}")
    if value is not None and in_attributes is not None and value != in_attributes:
        raise InvalidEventError("attribute audience contradicts body audience")
    return str(value or in_attributes or "user")


def _no_user_id(body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
    if body.get("user_id") is not None or attributes.get("user_id") is not None:
        raise InvalidEventError('a broadcast (audience "all") has no user_id')
    return ""


def _progress(body: Mapping[str, Any]) -> int | None:
    value = body.get("progress_percentage")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventError(f"progress_percentage must be an integer or null, got {_type_name(value)}")
    if not 0 <= value <= 100:
        raise InvalidEventError(f"progress_percentage must be 0-100, got {value}")
    return value


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEventError(f"metadata must be an object, got {_type_name(value)}")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise InvalidEventError(f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}")
    _check_storable(value, "metadata", 0)
    return value


def _check_storable(value: Any, path: str, depth: int) -> None:
    """Reject what Firestore would refuse, so it is dead-lettered, not retried."""
    if depth > MAX_METADATA_DEPTH:
        raise InvalidEventError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels at {path[:100]}")
    if isinstance(value, dict):
        for key, item in value.items():
            if not key:
                raise InvalidEventError(f"metadata has an empty key at {path[:100]}")
            if key.startswith("__") and key.endswith("__"):
                raise InvalidEventError(f"metadata key {key[:50]!r} is reserved by Firestore")
            _check_storable(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, list):
                raise InvalidEventError(f"metadata has an array directly inside an array at {path[:100]}")
            _check_storable(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise InvalidEventError(f"metadata integer at {path[:100]} does not fit in 64 bits")


def _timestamp(body: Mapping[str, Any]) -> datetime | None:
    value = body.get("timestamp")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"timestamp must be an ISO 8601 string, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidEventError(f"timestamp {value[:64]!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # 0001-01-01T00:00:00+01:00 is a valid ISO string whose UTC time is before year 1.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidEventError(f"timestamp {value[:64]!r} is outside years 1-9999 in UTC") from None
