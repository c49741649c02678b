"""Hypothesis: whatever a worker (or an attacker) publishes, ingest never raises on it,
never stores an invalid notification, and dead-letters every refusal with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.config import load_settings
from shared.events import EVENT_TYPES, MAX_MESSAGE, MAX_TITLE, parse_event

SETTINGS = load_settings({"NOTIFICATIONS_BACKEND": "memory"})

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
plausible_user = st.text(min_size=0, max_size=140) | st.sampled_from(["u1", "a/b", "", "__x__", "é🎬", "."])
fields = {
    "event_type": st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=40) | json_values,
    "user_id": plausible_user | json_values,
    "title": st.text(max_size=MAX_TITLE + 5) | json_values,
    "message": st.text(max_size=50) | st.just("m" * (MAX_MESSAGE + 1)) | json_values,
    "content_request_id": st.none() | st.text(max_size=20) | json_values,
    "progress_percentage": st.none() | st.integers(-5, 105) | json_values,
    "metadata": st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values,
    "timestamp": st.none() | st.text(max_size=30) | st.just("2026-11-28T10:00:00Z") | json_values,
    "event_id": st.none() | st.text(max_size=30) | json_values,
}
bodies = st.fixed_dictionaries({}, optional={**fields, "extra": json_values})
attributes = st.dictionaries(st.sampled_from(["user_id", "event_id", "x", "error"]), st.text(max_size=20), max_size=3)
raw_data = (
    bodies.map(lambda b: json.dumps(b).encode())
    | st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def _backends() -> Backends:
    return Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())


def _assert_valid_notification(notification: dict[str, Any]) -> None:
    # What was stored must itself pass the contract it came through.
    event = {
        k: notification[k]
        for k in (
            "event_type",
            "user_id",
            "title",
            "message",
            "content_request_id",
            "progress_percentage",
            "metadata",
            "timestamp",
        )
    }
    parse_event(json.dumps(event).encode(), {}, "check")
    json.dumps(notification, allow_nan=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=raw_data, attrs=attributes)
def test_ingest_never_raises_and_never_stores_invalid(data: bytes, attrs: dict[str, str]) -> None:
    backends = _backends()
    outcome = ingest(PubsubMessage(data, attrs, "fuzz-1", datetime.now(UTC)), backends, SETTINGS)
    dead = backends.dead_letters.messages  # type: ignore[attr-defined]
    published = backends.channel.published  # type: ignore[attr-defined]
    if outcome is Outcome.DEAD_LETTERED:
        [(sent, sent_attributes)] = dead
        assert sent == data, "dead letters carry the data unchanged"
        assert sent_attributes["error"].strip(), "every dead letter names a reason"
        assert len(sent_attributes["error"].encode()) <= 1024
        assert published == []
    else:
        assert outcome is Outcome.STORED
        assert dead == []
        [message] = published
        _assert_valid_notification(message.data)


@settings(max_examples=200, deadline=None)
@given(body=bodies)
def test_valid_looking_bodies_either_store_or_dead_letter_exactly_once(body: dict[str, Any]) -> None:
    backends = _backends()
    message = PubsubMessage(json.dumps(body).encode(), {}, "fuzz-2", datetime.now(UTC))
    first = ingest(message, backends, SETTINGS)
    second = ingest(message, backends, SETTINGS)
    if first is Outcome.STORED:
        assert second is Outcome.DUPLICATE
        user_id = body["user_id"]
        assert len(backends.store.page(user_id, 100).notifications) == 1
    else:
        assert first is second is Outcome.DEAD_LETTERED


def _one_field_changed(name: str, value: Any) -> dict[str, Any]:
    from tests.support.events import valid_event

    body = valid_event("fuzz-user")
    body[name] = value
    return body


near_valid = st.sampled_from(sorted(fields)).flatmap(
    lambda name: fields[name].map(lambda value: _one_field_changed(name, value))
)


@settings(max_examples=300, deadline=None)
@given(body=near_valid)
def test_one_bad_field_is_caught_and_named(body: dict[str, Any]) -> None:
    backends = _backends()
    outcome = ingest(PubsubMessage(json.dumps(body).encode(), {}, "fuzz-3", datetime.now(UTC)), backends, SETTINGS)
    if outcome is Outcome.STORED:
        [message] = backends.channel.published  # type: ignore[attr-defined]
        _assert_valid_notification(message.data)
        assert message.data["title"] == body["title"]
    else:
        [(_, sent_attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
        assert sent_attributes["error"]
