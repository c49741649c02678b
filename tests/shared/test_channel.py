import pytest

from shared.backends.memory import MemoryChannel
from shared.channel import ChannelMessage, channel_name, user_of_channel


def test_channel_naming_keeps_the_redis_convention() -> None:
    assert channel_name("u1") == "notifications:channel:u1"
    assert user_of_channel("notifications:channel:u1") == "u1"
    assert user_of_channel("notifications:channel:") is None
    assert user_of_channel("other:u1") is None


def test_message_round_trips_with_attributes() -> None:
    message = ChannelMessage("u1", "notification", {"id": "x", "title": "línea\nnueva 🎬"})
    decoded = ChannelMessage.decode(message.encode(), message.attributes())
    assert decoded == message
    assert message.attributes() == {"channel": "notifications:channel:u1", "user_id": "u1", "type": "notification"}


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
    message = ChannelMessage("u1", "notification", {})
    with pytest.raises(ValueError):
        ChannelMessage.decode(message.encode(), {"user_id": "u2"})


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
