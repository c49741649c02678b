"""Dead letters Pub/Sub would refuse as is are kept, trimmed, with what was cut named.

A message of nearly 10 MB whose dead-letter copy, with ``error`` added, was over
Pub/Sub's 10 MB request limit made the dead-letter publish raise
MessageTooLargeError, and the event was redelivered forever; 100 attributes
(Pub/Sub's maximum) plus ``error`` meets the same wall on the real service
(the emulator does not enforce the count). ``fit_dead_letter`` is fuzzed with
small limits; the sink is then run on the emulator with the reported sizes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.backends.pubsub_dead_letters import (
    MAX_ATTRIBUTES,
    MAX_KEY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_VALUE_BYTES,
    STUB_BODY_BYTES,
    TRIMMED,
    PubSubDeadLetters,
    fit_dead_letter,
    request_bytes,
    stub_dead_letter,
)
from shared.config import Settings
from tests.support.fuzzing import examples
from tests.support.pubsub import PullSubscription

TOPIC = "projects/p/topics/content-generation-events-dead-letter"
# A body that fits one publish request by itself, not with ``error`` and ``original_message_id`` added.
NEARLY_10_MB = MAX_REQUEST_BYTES - 200


def _attributes(count: int) -> dict[str, str]:
    return {f"attribute-{i:03d}": f"value {i}" for i in range(count)}


def _check_within_limits(data: bytes, attributes: dict[str, str], limit: int) -> None:
    assert request_bytes(TOPIC, data, attributes) <= limit
    assert len(attributes) <= MAX_ATTRIBUTES
    for key, value in attributes.items():
        assert key and len(key.encode()) <= MAX_KEY_BYTES and not key.startswith("goog")
        assert len(value.encode()) <= MAX_VALUE_BYTES


@pytest.mark.parametrize("size", [10, NEARLY_10_MB - 3_000], ids=["small", "just-under-10-MB"])
def test_a_dead_letter_within_the_limits_is_left_unchanged(size: int) -> None:
    attributes = {**_attributes(98), "error": "title is required", "original_message_id": "m1"}
    data = b"x" * size
    fitted = fit_dead_letter(data, attributes, TOPIC)
    assert (fitted.data, fitted.attributes, fitted.notes) == (data, attributes, [])


def test_one_attribute_too_many_drops_the_last_original_and_says_so() -> None:
    attributes = {**_attributes(100), "error": "title is required", "original_message_id": "m1", "user_id": "u1"}
    fitted = fit_dead_letter(b"{}", attributes, TOPIC)
    assert len(fitted.attributes) == MAX_ATTRIBUTES
    assert {"error", "original_message_id", "user_id"} <= set(fitted.attributes)
    # 99 kept and ``trimmed`` makes 100.
    assert set(fitted.dropped) == {"attribute-096", "attribute-097", "attribute-098", "attribute-099"}
    assert "dropped 4 of 103: attribute-096, attribute-097, attribute-098, attribute-099" in fitted.attributes[TRIMMED]


def test_a_body_too_large_keeps_its_start_and_names_size_and_hash() -> None:
    data = (bytes(range(256)) * (NEARLY_10_MB // 256 + 1))[:NEARLY_10_MB]
    assert request_bytes(TOPIC, data, {}) <= MAX_REQUEST_BYTES
    attributes = {"error": "e" * 1024, "original_message_id": "m" * 100}
    assert request_bytes(TOPIC, data, attributes) > MAX_REQUEST_BYTES
    fitted = fit_dead_letter(data, attributes, TOPIC)
    _check_within_limits(fitted.data, fitted.attributes, MAX_REQUEST_BYTES)
    assert data.startswith(fitted.data) and len(fitted.data) > len(data) - 4096
    assert f"of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}" in fitted.attributes[TRIMMED]


def test_a_stub_keeps_the_reason_the_ids_and_the_start_of_the_body() -> None:
    attributes = {**_attributes(5), "error": "why", "original_message_id": "m1", "event_id": "e1"}
    stub = stub_dead_letter(b"x" * (STUB_BODY_BYTES + 5), attributes, "InvalidArgument: 400 refused")
    assert stub.data == b"x" * STUB_BODY_BYTES
    assert {k: stub.attributes[k] for k in ("error", "original_message_id", "event_id")} == {
        "error": "why",
        "original_message_id": "m1",
        "event_id": "e1",
    }
    assert "Pub/Sub refused the dead letter (InvalidArgument: 400 refused)" in stub.attributes[TRIMMED]
    assert set(stub.dropped) == set(_attributes(5))


keys = st.text(min_size=0, max_size=12) | st.sampled_from(["goog-x", "k" * 300, "error", "trimmed", "user_id"])
values = st.text(max_size=20) | st.sampled_from(["v" * 1100, "é" * 600])


# Limits from what 100 attributes of the largest size take (about 130 KB) up: the
# body is what gives way, as with the real 10 MB limit.
bodies = st.binary(max_size=300) | st.integers(0, 400_000).map(lambda n: b"x" * n)


# Large examples are the point here; Hypothesis warns when it writes one out (an error under our settings).
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=examples(300), deadline=None)
@given(data=bodies, attributes=st.dictionaries(keys, values, max_size=110), limit=st.integers(140_000, 400_000))
def test_whatever_comes_in_the_dead_letter_fits_and_cuts_only_what_it_names(
    data: bytes, attributes: dict[str, str], limit: int
) -> None:
    fitted = fit_dead_letter(data, attributes, TOPIC, max_request_bytes=limit)
    _check_within_limits(fitted.data, fitted.attributes, limit)
    assert data.startswith(fitted.data)
    if fitted.data != data:
        # The attribute holds 1 KiB at most: a cut body is said first, whatever else was cut.
        assert fitted.attributes[TRIMMED].startswith("body: kept the first")
    # Every cut is in the notes (logged in full); ``trimmed`` is their beginning.
    said = "; ".join(fitted.notes)
    if TRIMMED in fitted.attributes:
        assert said.startswith(fitted.attributes[TRIMMED].removesuffix("..."))
    originals = {k: v for k, v in attributes.items() if k != TRIMMED}
    for key, value in originals.items():
        if key in fitted.dropped:
            assert key not in fitted.attributes
        elif fitted.attributes[key] != value:
            assert f"attribute {key[:40]} cut" in said
        else:
            assert fitted.attributes[key] == value
    assert set(originals) == (set(fitted.attributes) - {TRIMMED}) | set(fitted.dropped)
    assert (TRIMMED in fitted.attributes) == bool(fitted.notes)


# On the emulator: the sink publishes what the client library would have refused.


@pytest.fixture
def dead_letter_tap(settings: Settings) -> Iterator[PullSubscription]:
    subscription = PullSubscription(settings.project_id, settings.dead_letter_topic, large_messages=True)
    yield subscription
    subscription.delete()


@pytest.fixture
def sink(settings: Settings) -> Iterator[PubSubDeadLetters]:
    letters = PubSubDeadLetters(settings.project_id, settings.dead_letter_topic, timeout=30)
    yield letters
    letters.close()


def test_a_nearly_10_mb_dead_letter_is_published_trimmed(
    sink: PubSubDeadLetters, dead_letter_tap: PullSubscription, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"{" + b"x" * (NEARLY_10_MB - 2) + b"}"
    reason = "message data is not JSON: " + "x" * 300
    sink.send(data, {"error": reason, "original_message_id": "m-big", "k": "v"})
    [received] = dead_letter_tap.pull(1, timeout=60)
    assert received.attributes["original_message_id"] == "m-big" and received.attributes["k"] == "v"
    assert data.startswith(received.data) and len(received.data) > len(data) - 4096
    assert hashlib.sha256(data).hexdigest() in received.attributes[TRIMMED]
    [record] = [r for r in caplog.records if r.getMessage() == "dead letter trimmed to fit Pub/Sub's limits"]
    assert record.levelname == "ERROR" and record.__dict__["body_bytes"] == len(data)


def test_a_dead_letter_of_100_attributes_keeps_100(
    sink: PubSubDeadLetters, dead_letter_tap: PullSubscription
) -> None:
    sink.send(b"{}", {**_attributes(100), "error": "unknown field(s): x", "original_message_id": "m-100"})
    [received] = dead_letter_tap.pull(1, timeout=30)
    assert len(received.attributes) == MAX_ATTRIBUTES
    assert received.attributes["error"] == "unknown field(s): x"
    assert "dropped 3 of 102" in received.attributes[TRIMMED]
