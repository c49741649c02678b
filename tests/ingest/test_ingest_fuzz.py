"""Hypothesis: whatever a worker (or an attacker) publishes, ingest never raises on it, stores only what
SPEC section 2 allows, and dead-letters every refusal with a reason that names what was wrong.

The oracles are the test's own, never the validator it checks: ``_spec_problems`` restates the
contract a stored notification must meet, and the near-valid events are built by breaking one rule
of one named field (``BROKEN``) or by keeping every field within the rules (``WITHIN``). So a rule
deleted from shared/events.py makes these tests fail instead of being re-run as its own proof.
"""

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
from shared.events import EVENT_TYPES
from tests.support.events import valid_event
from tests.support.fuzzing import examples

SETTINGS = load_settings({"NOTIFICATIONS_BACKEND": "memory"})
# SPEC section 2's limits, written here rather than read from the validator.
MAX_USER_ID, MAX_TITLE, MAX_MESSAGE, MAX_METADATA_BYTES = 128, 200, 2000, 16 * 1024
DROP = object()  # the field is left out of the event

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

# Values that break a rule of SPEC section 2 for the field they are listed under.
finite = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity
not_a_string = (
    st.integers()
    | st.booleans()
    | finite
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
missing = st.just(DROP) | st.none()
BROKEN: dict[str, st.SearchStrategy[Any]] = {
    "event_type": missing | not_a_string | st.text(max_size=40).filter(lambda t: t not in EVENT_TYPES),
    "user_id": missing
    | not_a_string
    | st.just("")
    | st.text(min_size=MAX_USER_ID + 1, max_size=MAX_USER_ID + 10)
    | st.tuples(st.text(max_size=5), st.text(max_size=5)).map("/".join),
    "title": missing | not_a_string | st.just("") | st.text(min_size=MAX_TITLE + 1, max_size=MAX_TITLE + 10),
    "message": missing | not_a_string | st.text(alphabet="mé", min_size=MAX_MESSAGE + 1, max_size=MAX_MESSAGE + 5),
    "content_request_id": not_a_string,
    "progress_percentage": st.booleans()
    | finite
    | st.integers(max_value=-1)
    | st.integers(min_value=101)
    | st.text(max_size=4)
    | st.lists(st.integers(), max_size=2),
    "metadata": st.integers()
    | st.booleans()
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=2)
    | st.integers(MAX_METADATA_BYTES, MAX_METADATA_BYTES + 100).map(lambda n: {"blob": "x" * n}),
    "timestamp": not_a_string | st.sampled_from(["", "yesterday", "2026-13-01", "28/11/2026 10:00", "noon"]),
    "event_id": not_a_string,
}

# Values within every rule: an event made of them must be stored as sent.
text_without_surrogates = st.text(max_size=40)
storable_keys = st.text(min_size=1, max_size=8).filter(lambda k: not (k.startswith("__") and k.endswith("__")))
storable_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | finite
    | text_without_surrogates
)
WITHIN: dict[str, st.SearchStrategy[Any]] = {
    "event_type": st.sampled_from(sorted(EVENT_TYPES)),
    "user_id": st.text(
        st.characters(blacklist_characters="/", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=MAX_USER_ID
    ).filter(lambda u: u not in {".", ".."} and not (u.startswith("__") and u.endswith("__"))),
    # Whitespace alone is no title (shared/events.py refuses it on top of the SPEC's length).
    "title": st.text(min_size=1, max_size=MAX_TITLE).filter(str.strip),
    "message": text_without_surrogates | st.just("m" * MAX_MESSAGE),
    "content_request_id": st.none() | st.text(min_size=1, max_size=40),
    "progress_percentage": st.none() | st.integers(0, 100),
    "metadata": st.none() | st.dictionaries(storable_keys, storable_scalars, max_size=4),
    "timestamp": st.none() | st.datetimes(timezones=st.none() | st.just(UTC)).map(datetime.isoformat),
    "event_id": st.none() | st.text(min_size=1, max_size=40),
}


def _memory() -> tuple[Backends, MemoryChannel, MemoryDeadLetters]:
    channel, dead_letters = MemoryChannel(), MemoryDeadLetters()
    return Backends(MemoryStore(), channel, dead_letters), channel, dead_letters


def _spec_problems(notification: dict[str, Any]) -> list[str]:
    """The fields of a stored notification that break SPEC sections 2 and 3."""
    n = notification
    checks = {
        "event_type": n.get("event_type") in EVENT_TYPES,
        "user_id": isinstance(n.get("user_id"), str)
        and 1 <= len(n["user_id"]) <= MAX_USER_ID
        and "/" not in n["user_id"],
        "title": isinstance(n.get("title"), str) and 1 <= len(n["title"]) <= MAX_TITLE,
        "message": isinstance(n.get("message"), str) and len(n["message"]) <= MAX_MESSAGE,
        "content_request_id": n.get("content_request_id") is None or isinstance(n["content_request_id"], str),
        "progress_percentage": n.get("progress_percentage") is None
        or (type(n["progress_percentage"]) is int and 0 <= n["progress_percentage"] <= 100),
        "metadata": isinstance(n.get("metadata"), dict)
        and len(json.dumps(n["metadata"], ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_METADATA_BYTES,
    }
    problems = [name for name, ok in checks.items() if not ok]
    try:
        json.dumps(n, allow_nan=False)
    except ValueError:
        problems.append("not JSON a browser can parse")
    return problems


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=raw_data, attrs=attributes)
def test_ingest_never_raises_and_never_stores_invalid(data: bytes, attrs: dict[str, str]) -> None:
    backends, channel, dead_letters = _memory()
    outcome = ingest(PubsubMessage(data, attrs, "fuzz-1", datetime.now(UTC)), backends, SETTINGS)
    if outcome is Outcome.DEAD_LETTERED:
        [(sent, sent_attributes)] = dead_letters.messages
        assert sent == data, "dead letters carry the data unchanged"
        assert sent_attributes["error"].strip(), "every dead letter names a reason"
        assert len(sent_attributes["error"].encode()) <= 1024
        assert channel.published == []
    else:
        assert outcome is Outcome.STORED
        assert dead_letters.messages == []
        [message] = channel.published
        assert _spec_problems(message.data) == []


@settings(max_examples=examples(200), deadline=None)
@given(body=bodies)
def test_valid_looking_bodies_either_store_or_dead_letter_exactly_once(body: dict[str, Any]) -> None:
    backends, _, _ = _memory()
    message = PubsubMessage(json.dumps(body).encode(), {}, "fuzz-2", datetime.now(UTC))
    first = ingest(message, backends, SETTINGS)
    second = ingest(message, backends, SETTINGS)
    if first is Outcome.STORED:
        assert second is Outcome.DUPLICATE
        user_id = body["user_id"]
        assert len(backends.store.page(user_id, 100).notifications) == 1
    else:
        assert first is second is Outcome.DEAD_LETTERED


def _with(name: str, value: Any) -> dict[str, Any]:
    body = valid_event("fuzz-user")
    if value is DROP:
        del body[name]
    else:
        body[name] = value
    return body


one_broken_field = st.sampled_from(sorted(BROKEN)).flatmap(lambda name: BROKEN[name].map(lambda v: (name, v)))


@settings(max_examples=examples(300), deadline=None)
@given(case=one_broken_field)
def test_one_bad_field_is_caught_and_named(case: tuple[str, Any]) -> None:
    name, value = case
    body = _with(name, value)
    backends, channel, dead_letters = _memory()
    outcome = ingest(PubsubMessage(json.dumps(body).encode(), {}, "fuzz-3", datetime.now(UTC)), backends, SETTINGS)
    assert outcome is Outcome.DEAD_LETTERED, f"{name}={value!r} was accepted"
    [(_, sent_attributes)] = dead_letters.messages
    assert name in sent_attributes["error"], sent_attributes["error"]
    assert channel.published == []
    assert backends.store.page("fuzz-user", 10).notifications == []


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.fixed_dictionaries(WITHIN))
def test_an_event_within_every_rule_is_stored_as_sent(body: dict[str, Any]) -> None:
    backends, channel, dead_letters = _memory()
    outcome = ingest(PubsubMessage(json.dumps(body).encode(), {}, "fuzz-4", datetime.now(UTC)), backends, SETTINGS)
    assert outcome is Outcome.STORED, dead_letters.messages
    [message] = channel.published
    for name in ("event_type", "user_id", "title", "message", "content_request_id", "progress_percentage"):
        assert message.data[name] == body[name], name
    assert message.data["metadata"] == (body["metadata"] or {})


# The classes of poison events that were once retried forever: ISO timestamps whose
# UTC time leaves years 1-9999 (OverflowError), integers past Python's 4,300-digit
# parsing limit (ValueError), numbers JSON allows and Python reads oddly, in any
# field, written as raw JSON text the way a worker's serializer would.
timestamps = st.builds(
    lambda year, month, day, hour, offset: f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:59:59{offset}",
    st.sampled_from([1, 2, 1970, 2026, 9998, 9999]) | st.integers(1, 9999),
    st.sampled_from([1, 12]) | st.integers(1, 12),
    st.sampled_from([1, 28, 31]),
    st.sampled_from([0, 23]),
    st.sampled_from(["Z", "+01:00", "-01:00", "+23:59", "-23:59", "", "+00:00", "z"]),
)
raw_numbers = (
    st.integers(4290, 6000).map(lambda n: "7" * n)
    | st.integers(4290, 6000).map(lambda n: "-" + "1" * n)
    | st.sampled_from(["1e400", "-1e400", "1e-400", "-0", "0.0", "9" * 30, "1" + "0" * 19, "1.5e308"])
)


@st.composite
def poison_bodies(draw: st.DrawFn) -> bytes:
    body = {**_with("timestamp", draw(timestamps))}
    text = json.dumps(body)
    where = draw(st.sampled_from(["metadata", "progress_percentage", "timestamp", "title", "none"]))
    number = draw(raw_numbers)
    if where == "metadata":
        text = text.replace('"metadata": {', '"metadata": {"n": ' + number + ", ", 1)
    elif where == "none":
        pass
    else:
        text = text.replace(f'"{where}": ', f'"{where}": {number}, "_{where}": ', 1)
    return text.encode()


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=poison_bodies(), attribute_count=st.sampled_from([0, 1, 99, 100]))
def test_poison_events_end_once_stored_or_dead_lettered(data: bytes, attribute_count: int) -> None:
    backends, _, _ = _memory()
    attrs = {f"a{i}": "v" for i in range(attribute_count)}
    outcome = ingest(PubsubMessage(data, attrs, "fuzz-4", datetime.now(UTC)), backends, SETTINGS)
    dead = backends.dead_letters.messages  # type: ignore[attr-defined]
    if outcome is Outcome.DEAD_LETTERED:
        [(sent, sent_attributes)] = dead
        assert sent == data and sent_attributes["error"].strip()
    else:
        assert outcome is Outcome.STORED and dead == []
        [message] = backends.channel.published  # type: ignore[attr-defined]
        assert _spec_problems(message.data) == []
