import json

import pytest

from functions.stream import sse
from functions.stream.hub import _for_user, encode_message
from shared.backends.memory import MemoryChannel
from shared.channel import DATA_FORMAT, ChannelMessage, channel_name, user_of_channel


def test_channel_naming_keeps_the_redis_convention() -> None:
    assert channel_name("u1") == "notifications:channel:u1"
    assert user_of_channel("notifications:channel:u1") == "u1"
    assert user_of_channel("notifications:channel:") is None
    assert user_of_channel("other:u1") is None


def test_message_round_trips_with_attributes() -> None:
    message = ChannelMessage("u1", "notification", {"id": "x", "title": "línea\nnueva 🎬"}, sent_at=1.5)
    decoded = ChannelMessage.decode(message.encode(), message.attributes())
    assert decoded == message
    assert message.attributes() == {
        "channel": "notifications:channel:u1",
        "user_id": "u1",
        "type": "notification",
        "format": DATA_FORMAT,
        "sent_at": "1.5",
    }


@pytest.mark.parametrize(
    "message",
    [
        ChannelMessage("u1", "notification", {"id": "x", "user_id": "u1"}, seq=7, published_at=1796.25),
        ChannelMessage("u1", "notification.updated", {"ids": ["x"], "read": True}, seq=8),
        ChannelMessage("", "notification", {"id": "b", "title": "Maintenance"}, seq=3, broadcast=True),
    ],
)
def test_the_data_goes_as_the_stream_sends_it(message: ChannelMessage) -> None:
    data, attributes = message.pubsub_message()
    # The data: line of the event, byte for byte: a receiver streams it without a decode and encode.
    assert sse.frame(message.type, message.data) == b"event: " + message.type.encode() + b"\ndata: " + data + b"\n\n"
    decoded = ChannelMessage.decode(data, attributes)
    assert decoded == message and decoded.wire == data
    assert encode_message(decoded) == encode_message(message)


def test_a_broadcast_shown_to_a_user_is_encoded_again() -> None:
    message = ChannelMessage("", "notification", {"id": "b", "title": "Maintenance"}, seq=3, broadcast=True)
    decoded = ChannelMessage.decode(*message.pubsub_message())
    shown = _for_user(decoded, "u9")
    assert shown.wire is None
    assert b'"user_id":"u9"' in encode_message(shown)


@pytest.mark.parametrize(
    ("why", "data"),
    [
        # Routed to u1 but naming u2: receivers must see the body to drop it.
        ("another user", {"id": "x", "user_id": "u2"}),
        ("not JSON", {"id": "x", "progress": float("nan")}),
    ],
)
def test_what_receivers_must_inspect_goes_in_the_older_envelope(why: str, data: dict[str, object]) -> None:
    message = ChannelMessage("u1", "notification", data, seq=2)
    body, attributes = message.pubsub_message()
    assert "format" not in attributes, why
    decoded = ChannelMessage.decode(body, attributes)
    assert decoded.wire is None and decoded.seq == 2 and decoded.user_id == "u1"
    assert decoded.data.get("user_id") == data.get("user_id")


_GOOD = {"type": "notification", "user_id": "u1", "format": DATA_FORMAT, "sent_at": "1.0"}


@pytest.mark.parametrize(
    ("data", "attributes"),
    [
        ('{"title":"línea"}'.encode(), _GOOD),
        (b'{"title":"a\nb"}', _GOOD),
        (b'{"title":"a\rb"}', _GOOD),
        (b'{"title":"a\x00b"}', _GOOD),
        (b'["a"]', _GOOD),
        (b"", _GOOD),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, _GOOD),
        (b'{"id":"x"}', {**_GOOD, "type": "other"}),
        (b'{"id":"x"}', {k: v for k, v in _GOOD.items() if k != "user_id"}),
        (b'{"id":"x"}', {**_GOOD, "seq": "0"}),
        (b'{"id":"x"}', {**_GOOD, "seq": "-1"}),
        (b'{"id":"x"}', {**_GOOD, "seq": "1.5"}),
        (b'{"id":"x"}', {**_GOOD, "seq": "\u0661"}),  # a digit, but not an ASCII one
    ],
)
def test_a_bad_message_in_the_data_format_is_refused(data: bytes, attributes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ChannelMessage.decode(data, attributes)


def test_escaped_text_in_the_data_format_is_read() -> None:
    assert ChannelMessage.decode(rb'{"title":"l\u00ednea"}', _GOOD).data == {"title": "línea"}


def test_unreadable_times_fall_back() -> None:
    attributes = {**_GOOD, "sent_at": "nan", "published_at": "soon"}
    decoded = ChannelMessage.decode(b'{"id":"x"}', attributes)
    assert decoded.published_at is None and decoded.sent_at > 1e9


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b'{"type": "other", "user_id": "u", "data": {}}', b'{"type": "notification", "data": {}}'],
)
def test_foreign_messages_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        ChannelMessage.decode(data)


def test_a_deeply_nested_channel_message_is_refused() -> None:
    # Regression: RecursionError escaped decode, inside the Pub/Sub callback thread.
    with pytest.raises(ValueError, match="nested too deeply"):
        ChannelMessage.decode(b"[" * 100_000 + b"]" * 100_000)


def test_attribute_contradicting_body_is_refused() -> None:
    # The older envelope, which publishers of the previous release still send.
    envelope = json.dumps({"type": "notification", "user_id": "u1", "data": {}, "sent_at": 1.0}).encode()
    assert ChannelMessage.decode(envelope, {"user_id": "u1"}).wire is None
    with pytest.raises(ValueError):
        ChannelMessage.decode(envelope, {"user_id": "u2"})


def test_redis_shaped_api_publishes_to_subscribers() -> None:
    channel = MemoryChannel()
    received: list[ChannelMessage] = []
    subscription = channel.subscribe("instance-a", received.extend)
    assert channel.publish_notification("u1", {"id": "a"}) is True
    assert channel.publish_batch([("u2", {"id": "b"}), ("u3", {"id": "c"})]) == 2
    assert [(m.user_id, m.data["id"]) for m in received] == [("u1", "a"), ("u2", "b"), ("u3", "c")]
    subscription.close()
    channel.publish_notification("u1", {"id": "d"})
    assert len(received) == 3
