import json
from datetime import UTC, datetime

import pytest

from shared.errors import InvalidEventError
from shared.events import EVENT_TYPES, parse_event
from tests.support.events import MALFORMED, valid_event


def _data(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()


def test_valid_event_parses_every_field() -> None:
    event = parse_event(_data(valid_event("alice", event_id="e-1")), {}, "m-1")
    assert event.user_id == "alice"
    assert event.event_type == "content_generation.completed"
    assert event.progress_percentage == 100
    assert event.metadata == {"video_url": "https://example.invalid/v.mp4"}
    assert event.timestamp == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert event.event_id == "e-1"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_is_accepted(event_type: str) -> None:
    assert parse_event(_data(valid_event(event_type=event_type)), {}, "m").event_type == event_type


def test_event_id_defaults_to_message_id() -> None:
    body = valid_event()
    del body["event_id"]
    assert parse_event(_data(body), {}, "pubsub-42").event_id == "pubsub-42"


def test_user_id_may_come_as_attribute() -> None:
    body = valid_event()
    del body["user_id"]
    assert parse_event(_data(body), {"user_id": "bob"}, "m").user_id == "bob"


def test_agreeing_attribute_is_fine() -> None:
    assert parse_event(_data(valid_event("bob")), {"user_id": "bob"}, "m").user_id == "bob"


def test_optional_fields_may_be_null_or_absent() -> None:
    body = valid_event(content_request_id=None, progress_percentage=None, metadata=None, timestamp=None)
    event = parse_event(_data(body), {}, "m")
    assert (event.content_request_id, event.progress_percentage, event.metadata, event.timestamp) == (
        None,
        None,
        {},
        None,
    )


def test_limits_are_inclusive() -> None:
    body = valid_event(title="t" * 200, message="m" * 2000, user_id="u" * 128, progress_percentage=0)
    event = parse_event(_data(body), {}, "m")
    assert len(event.title) == 200 and len(event.user_id) == 128


def test_naive_timestamp_is_taken_as_utc() -> None:
    event = parse_event(_data(valid_event(timestamp="2026-11-28T10:00:00")), {}, "m")
    assert event.timestamp == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("data", "attributes", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_event_is_refused_with_reason(data: bytes, attributes: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidEventError) as raised:
        parse_event(data, attributes, "m")
    assert reason in str(raised.value)


# Every field of SPEC section 2, from the test's own valid event (not from the validator's list).
@pytest.mark.parametrize("name", sorted(valid_event()))
def test_a_field_of_the_wrong_type_is_refused_naming_it(name: str) -> None:
    # An array is the wrong type for every field; the reason names the field so a person can fix the event.
    with pytest.raises(InvalidEventError, match=name):
        parse_event(_data({**valid_event(), name: [1]}), {}, "m")
