"""The ingest logic on the embedded backends: fast checks of every branch."""

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from functions.ingest.ingest import Outcome, PubsubMessage, ingest, ingest_cloud_event
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.channel import ChannelMessage
from shared.config import load_settings
from shared.errors import BackendMisconfigured, BackendUnavailable
from shared.feed import Applied
from shared.notification import NewNotification
from tests.support.events import MALFORMED, valid_event

SETTINGS = load_settings({"NOTIFICATIONS_BACKEND": "memory", "EVENT_MAX_AGE_SECONDS": "600"})


def _backends() -> Backends:
    return Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())


def _message(event: dict[str, object], message_id: str = "m1", age: float = 0.0) -> PubsubMessage:
    return PubsubMessage(json.dumps(event).encode(), {}, message_id, datetime.now(UTC) - timedelta(seconds=age))


def test_valid_event_is_stored_and_published() -> None:
    backends = _backends()
    assert ingest(_message(valid_event("u1")), backends, SETTINGS) is Outcome.STORED
    page = backends.store.page("u1", 10)
    assert len(page.notifications) == 1
    published = backends.channel.published  # type: ignore[attr-defined]
    assert [(m.user_id, m.type, m.data["id"]) for m in published] == [("u1", "notification", page.notifications[0].id)]


def test_redelivery_yields_one_notification_and_republishes() -> None:
    backends = _backends()
    event = valid_event("u1")
    outcomes = [ingest(_message(event, message_id=f"m{i}"), backends, SETTINGS) for i in range(10)]
    assert outcomes == [Outcome.STORED] + [Outcome.DUPLICATE] * 9
    assert len(backends.store.page("u1", 100).notifications) == 1
    published_ids = {m.data["id"] for m in backends.channel.published}  # type: ignore[attr-defined]
    assert len(published_ids) == 1


@pytest.mark.parametrize(("data", "attributes", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_event_is_dead_lettered_unchanged(data: bytes, attributes: dict[str, str], reason: str) -> None:
    backends = _backends()
    outcome = ingest(PubsubMessage(data, attributes, "bad-1"), backends, SETTINGS)
    assert outcome is Outcome.DEAD_LETTERED
    [(sent, sent_attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
    assert sent == data
    assert reason in sent_attributes["error"]
    assert sent_attributes["original_message_id"] == "bad-1"
    assert backends.channel.published == []  # type: ignore[attr-defined]


class _FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def apply(self, new: NewNotification) -> Applied:
        if self.failing:
            raise BackendUnavailable("firestore down")
        return super().apply(new)


class _FailingChannel(MemoryChannel):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def publish_many(self, messages: object) -> None:
        if self.failing:
            raise BackendUnavailable("pubsub down")
        super().publish_many(messages)  # type: ignore[arg-type]


def test_transient_store_failure_raises_then_succeeds() -> None:
    store = _FailingStore()
    backends = Backends(store, MemoryChannel(), MemoryDeadLetters())
    message = _message(valid_event("u1"))
    with pytest.raises(BackendUnavailable):
        ingest(message, backends, SETTINGS)
    store.failing = False
    assert ingest(message, backends, SETTINGS) is Outcome.STORED
    assert backends.dead_letters.messages == []  # type: ignore[attr-defined]


def test_publish_failure_after_persist_is_retried_and_published_on_redelivery() -> None:
    channel = _FailingChannel()
    backends = Backends(MemoryStore(), channel, MemoryDeadLetters())
    message = _message(valid_event("u1"))
    with pytest.raises(BackendUnavailable):
        ingest(message, backends, SETTINGS)
    channel.failing = False
    assert ingest(message, backends, SETTINGS) is Outcome.DUPLICATE
    assert len(channel.published) == 1


def test_event_too_old_to_retry_is_dead_lettered_instead() -> None:
    backends = Backends(_FailingStore(), MemoryChannel(), MemoryDeadLetters())
    assert ingest(_message(valid_event("u1"), age=601), backends, SETTINGS) is Outcome.DEAD_LETTERED
    [(_, attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
    assert "gave up" in attributes["error"]


class _BuggyStore(MemoryStore):
    def apply(self, new: NewNotification) -> Applied:
        raise RuntimeError("a bug, not an outage")


def test_unexpected_error_is_retried_while_young_and_dead_lettered_when_old() -> None:
    backends = Backends(_BuggyStore(), MemoryChannel(), MemoryDeadLetters())
    with pytest.raises(RuntimeError):
        ingest(_message(valid_event("u1"), age=1), backends, SETTINGS)
    assert ingest(_message(valid_event("u1"), age=601), backends, SETTINGS) is Outcome.DEAD_LETTERED
    [(_, attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
    assert "a bug, not an outage" in attributes["error"]


def test_old_event_is_still_stored_when_nothing_fails() -> None:
    backends = _backends()
    assert ingest(_message(valid_event("u1"), age=10_000), backends, SETTINGS) is Outcome.STORED


def test_deleted_notification_is_not_resurrected_by_redelivery() -> None:
    backends = _backends()
    message = _message(valid_event("u1"))
    ingest(message, backends, SETTINGS)
    [stored] = backends.store.page("u1", 10).notifications
    assert backends.store.delete("u1", stored.id)
    assert ingest(message, backends, SETTINGS) is Outcome.IGNORED
    assert backends.store.page("u1", 10).notifications == []
    assert len(backends.channel.published) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [None, {}, {"message": "nope"}, {"message": {"data": "!!!not base64!!!", "messageId": "x"}}],
)
def test_malformed_cloud_events_are_dead_lettered(data: object) -> None:
    backends = _backends()
    assert ingest_cloud_event(data, "ce-1", backends, SETTINGS) is Outcome.DEAD_LETTERED
    assert len(backends.dead_letters.messages) == 1  # type: ignore[attr-defined]


def test_channel_message_carries_the_notification() -> None:
    backends = _backends()
    ingest(_message(valid_event("u1", title="Línea\r\nDos 🎬")), backends, SETTINGS)
    [message] = backends.channel.published  # type: ignore[attr-defined]
    assert isinstance(message, ChannelMessage)
    assert message.data["title"] == "Línea\r\nDos 🎬"
    assert message.data["read"] is False


# Nothing retries forever (SPEC section 2): every path ends in a dead letter, or,
# for an event too old to retry whose dead letter cannot be sent, in the log.


class _RefusingDeadLetters(MemoryDeadLetters):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def send(self, data: bytes, attributes: Mapping[str, str]) -> None:
        raise self.error


class _MisconfiguredStore(MemoryStore):
    def apply(self, new: NewNotification) -> Applied:
        raise BackendMisconfigured("Firestore misconfigured during persist: PermissionDenied")


class _MisconfiguredChannel(MemoryChannel):
    def publish_many(self, messages: object) -> None:
        raise BackendMisconfigured("Pub/Sub misconfigured during publish: NotFound: Topic not found")


def test_an_unforeseen_validation_error_is_a_dead_letter_not_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse_with_a_gap(*args: object) -> None:
        raise KeyError("a case validation did not foresee")

    monkeypatch.setattr("functions.ingest.ingest.parse_event", parse_with_a_gap)
    backends = _backends()
    assert ingest(_message(valid_event("u1")), backends, SETTINGS) is Outcome.DEAD_LETTERED
    [(_, attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
    assert "could not be validated: KeyError" in attributes["error"]


@pytest.mark.parametrize("store_or_channel", [_MisconfiguredStore, _MisconfiguredChannel], ids=["store", "channel"])
def test_a_misconfigured_backend_dead_letters_a_young_event_at_once(store_or_channel: type) -> None:
    failing = store_or_channel()
    store = failing if isinstance(failing, MemoryStore) else MemoryStore()
    channel = failing if isinstance(failing, MemoryChannel) else MemoryChannel()
    backends = Backends(store, channel, MemoryDeadLetters())
    assert ingest(_message(valid_event("u1"), age=1), backends, SETTINGS) is Outcome.DEAD_LETTERED
    [(_, attributes)] = backends.dead_letters.messages  # type: ignore[attr-defined]
    assert attributes["error"].startswith("backend misconfigured: ")


@pytest.mark.parametrize(
    "error",
    [
        BackendUnavailable("dead-letter topic unreachable"),
        BackendMisconfigured("dead-letter topic missing"),
        RuntimeError("a bug in the sink"),
    ],
    ids=["unavailable", "misconfigured", "bug"],
)
@pytest.mark.parametrize("cause", ["invalid", "misconfigured-store", "outage-past-max-age"])
def test_a_dead_letter_that_cannot_be_sent_is_retried_while_young_then_kept_in_the_log(
    error: Exception, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = json.dumps(valid_event("u1")).encode() if cause != "invalid" else b'{"not": "an event"}'
    store = {"invalid": MemoryStore, "misconfigured-store": _MisconfiguredStore}.get(cause, _FailingStore)()
    backends = Backends(store, MemoryChannel(), _RefusingDeadLetters(error))
    if cause != "outage-past-max-age":
        young = PubsubMessage(data, {"k": "v"}, "m-young", datetime.now(UTC) - timedelta(seconds=1))
        with pytest.raises(type(error)):
            ingest(young, backends, SETTINGS)
    old = PubsubMessage(data, {"k": "v"}, "m-old", datetime.now(UTC) - timedelta(seconds=601))
    assert ingest(old, backends, SETTINGS) is Outcome.ABANDONED
    [record] = [r for r in caplog.records if r.getMessage() == "content event abandoned"]
    assert record.levelname == "ERROR"
    assert record.__dict__["message_id"] == "m-old"
    assert record.__dict__["body_start"] == data.decode()
    assert record.__dict__["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert record.__dict__["attributes"] == {"k": "v"}


def test_a_cloud_event_without_a_publish_time_is_dated_by_its_event_time() -> None:
    backends = Backends(MemoryStore(), MemoryChannel(), _RefusingDeadLetters(BackendUnavailable("down")))
    data = {"message": {"data": base64.b64encode(b"not json").decode(), "messageId": "m-1"}}
    now = datetime.now(UTC)
    with pytest.raises(BackendUnavailable):
        ingest_cloud_event(data, "ce-1", backends, SETTINGS, (now - timedelta(seconds=5)).isoformat())
    old = (now - timedelta(seconds=601)).isoformat()
    assert ingest_cloud_event(data, "ce-1", backends, SETTINGS, old) is Outcome.ABANDONED
    assert ingest_cloud_event(None, "ce-2", backends, SETTINGS, old) is Outcome.ABANDONED
