"""The routing bench keeps each user's changes in order when it does not store them."""

from __future__ import annotations

import random

from bench.routing import _one_per_user
from shared.channel import ChannelMessage


def test_a_tick_is_split_so_no_part_holds_a_user_twice() -> None:
    rng = random.Random(3)
    messages = [ChannelMessage(f"u{rng.randrange(6)}", "notification", {"n": n}) for n in range(40)]
    parts = _one_per_user(messages)
    assert len(parts) > 1
    for part in parts:
        assert len({m.user_id for m in part}) == len(part)
    # Published part after part, each user's messages leave in the order they were made.
    flat = [m for part in parts for m in part]
    assert sorted(flat, key=lambda m: m.data["n"]) == messages
    for user in {m.user_id for m in messages}:
        assert [m.data["n"] for m in flat if m.user_id == user] == [m.data["n"] for m in messages if m.user_id == user]


def test_a_tick_of_distinct_users_is_one_part() -> None:
    messages = [ChannelMessage(f"u{n}", "notification", {"n": n}) for n in range(10)]
    assert _one_per_user(messages) == [messages]
