"""Per-user rate limits (functions/stream/ratelimit.py): the buckets, then 429s over HTTP.

One user with one token made 18 mark-read calls a second of 500 ids each
(about 9,350 Firestore reads a second). Each kind of request now has a
per-user bucket, and a mark call names at most HISTORY_MAX_IDS_PER_REQUEST ids.
"""

from __future__ import annotations

import httpx
import pytest

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from functions.stream.ratelimit import RateLimiter
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.tokens import mint_token
from tests.support.asgi import serving

PREFIX = "/api/v1/notifications"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_the_rate_and_tells_how_long_to_wait() -> None:
    clock = _Clock()
    limiter = RateLimiter({"changes": 60}, clock=clock)  # one a second, bursts of 10
    assert [limiter.wait("changes", "u1") for _ in range(10)] == [0.0] * 10
    assert limiter.wait("changes", "u1") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.wait("changes", "u1") == pytest.approx(0.5), "a refused request takes nothing"
    clock.now += 0.5
    assert limiter.wait("changes", "u1") == 0.0
    assert limiter.wait("changes", "u1") > 0
    clock.now += 3600
    assert [limiter.wait("changes", "u1") for _ in range(10)] == [0.0] * 10, "refills to the burst, no more"
    assert limiter.wait("changes", "u1") > 0


def test_users_and_kinds_have_their_own_buckets() -> None:
    limiter = RateLimiter({"history": 6, "connects": 6}, clock=_Clock())  # bursts of 1
    assert limiter.wait("history", "u1") == 0.0
    assert limiter.wait("history", "u1") == pytest.approx(10.0)
    assert limiter.wait("history", "u2") == 0.0
    assert limiter.wait("connects", "u1") == 0.0


def test_the_buckets_are_bounded_and_forgetting_one_only_refills_it() -> None:
    limiter = RateLimiter({"history": 6}, clock=_Clock(), max_buckets=100)
    for user in range(1000):
        assert limiter.wait("history", f"u{user}") == 0.0
    assert len(limiter._buckets) == 100
    assert limiter.wait("history", "u999") > 0, "a recent user is still limited"
    assert limiter.wait("history", "u0") == 0.0, "a forgotten one starts full"


LIMITED = load_stream_settings(
    {
        "NOTIFICATIONS_BACKEND": "memory",
        "NOTIFICATIONS_LOCAL_MODE": "true",
        "RATE_LIMIT_HISTORY_PER_MINUTE": "12",  # bursts of 2
        "RATE_LIMIT_CHANGES_PER_MINUTE": "6",  # bursts of 1
        "RATE_LIMIT_CONNECTS_PER_MINUTE": "6",
        "HISTORY_MAX_IDS_PER_REQUEST": "3",
    }
)


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, LIMITED)}"}


def _assert_limited(response: httpx.Response, at_most: str) -> None:
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "rate_limited"
    assert at_most in response.json()["error"]["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 60


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_each_kind_is_answered_429_with_retry_after_per_user(anyio_backend: str) -> None:
    backends = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    async with serving(create_app(LIMITED, backends)) as client:
        alice, bob = _auth("alice"), _auth("bob")
        assert [(await client.get(PREFIX, headers=alice)).status_code for _ in range(2)] == [200, 200]
        _assert_limited(await client.get(PREFIX, headers=alice), "at most 12 a minute")
        assert (await client.get(PREFIX, headers=bob)).status_code == 200, "another user is not limited"

        # Changes share one bucket: mark-read, mark-unread, delete one, delete all.
        assert (await client.post(f"{PREFIX}/mark-read", headers=alice, json={"all": True})).status_code == 200
        for method, path, body in (
            ("POST", f"{PREFIX}/mark-read", {"all": True}),
            ("POST", f"{PREFIX}/mark-unread", {"notification_ids": ["0" * 24]}),
            ("DELETE", f"{PREFIX}/{'0' * 24}", None),
            ("DELETE", PREFIX, None),
        ):
            _assert_limited(await client.request(method, path, headers=alice, json=body), "at most 6 a minute")

        # A connect is counted once authenticated, whatever comes of it (this one: a bad cursor, 400).
        assert (await client.get(f"{PREFIX}/stream", headers=alice, params={"last_event_id": "x"})).status_code == 400
        _assert_limited(await client.get(f"{PREFIX}/stream", headers=alice), "stream connections")
        metrics = (await client.get("/metrics")).text
        assert 'sse_rate_limited_total{kind="changes"}' in metrics


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_mark_call_names_a_bounded_number_of_ids(anyio_backend: str) -> None:
    backends = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    async with serving(create_app(LIMITED, backends)) as client:
        too_many = {"notification_ids": ["0" * 23 + str(i) for i in range(4)]}
        response = await client.post(f"{PREFIX}/mark-read", headers=_auth("carol"), json=too_many)
        assert response.status_code == 400 and "at most 3 notification_ids" in response.json()["error"]["message"]
        enough = {"notification_ids": ["0" * 23 + str(i) for i in range(3)]}
        assert (await client.post(f"{PREFIX}/mark-read", headers=_auth("dave"), json=enough)).json() == {"updated": 0}
