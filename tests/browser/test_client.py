"""client.js in Chromium against a scripted stream (tests/browser/fake_stream.py).

The cases the real service produces rarely or slowly: a stream that stops
sending heartbeats, a 401, truncated replays, duplicates and out-of-order ids,
repeated failures (backoff), and which resume mechanism each reconnect uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.fake_stream import FakeStream, Hang, Pause, Refuse, established, frame, nid, notification
from tests.support.waiting import wait_for

WAIT_MS = 10_000


@pytest.fixture
def fake() -> Iterator[FakeStream]:
    fake = FakeStream()
    server = fake.serve()
    yield fake
    server.should_exit = True


@pytest.fixture
def page(context: Any, fake: FakeStream) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(fake.url)
    page.wait_for_function("() => window.ready === true")
    return page


def start(page: Any, tokens: list[str], **options: Any) -> None:
    page.evaluate("([tokens, options]) => window.startClient(tokens, options)", [tokens, options])


def state(page: Any) -> Any:
    return page.evaluate(
        "() => ({ids: client.notifications.map(n => n.id), read: client.notifications.map(n => n.read),"
        " unread: client.unreadCount, last: client.lastEventId, state: client.state, log: window.log})"
    )


def test_dedupes_orders_and_applies_changes(page: Any, fake: FakeStream) -> None:
    fake.plans.append(
        [
            established(),
            notification(nid(2)),
            notification(nid(1)),  # out of order
            notification(nid(2)),  # duplicate
            notification(nid(3)),
            frame("notification.updated", {"ids": [nid(1)], "read": True}),
            frame("notification.deleted", {"ids": [nid(3)]}),
            "data: not json\n\n",  # ignored, never breaks the stream
            Hang(),
        ]
    )
    start(page, ["t1"])
    page.wait_for_function("() => client.notifications.length === 2 && client.unreadCount === 1", timeout=WAIT_MS)
    result = state(page)
    assert result["ids"] == [nid(2), nid(1)], "newest first, no duplicate"
    assert result["read"] == [False, True]
    assert result["last"] == nid(3)
    assert result["log"]["live"] == [nid(2), nid(1), nid(3)], "onNotification once per id"
    assert page.errors == []


def test_clear_all_event_empties_the_list(page: Any, fake: FakeStream) -> None:
    fake.plans.append([established(), notification(nid(1)), frame("notification.deleted", {"all": True}), Hang()])
    start(page, ["t1"])
    page.wait_for_function("() => window.log.live.length === 1 && client.notifications.length === 0")
    assert state(page)["unread"] == 0


def test_a_dropped_stream_resumes_after_the_last_id_with_a_new_ticket(page: Any, fake: FakeStream) -> None:
    fake.plans.append([established(retry_ms=100), notification(nid(5))])  # then the response ends
    fake.plans.append([established(heartbeat_interval=0.2), notification(nid(6)), Hang()])
    fake.plans.append([established(), Hang()])
    start(page, ["t1"])
    page.wait_for_function("() => client.notifications.length === 2", timeout=WAIT_MS)
    assert len(fake.attempts) == 2
    first, second = fake.attempts
    assert second.query.get("last_event_id") == nid(5)
    # A ticket opens one stream: every attempt asks for a new one, with the same token.
    assert first.query["ticket"] != second.query["ticket"]
    assert first.token == second.token == "t1"
    assert "token" not in first.query and "token" not in second.query
    assert fake.reused_tickets == []


def test_missing_heartbeats_make_the_client_reconnect_itself(page: Any, fake: FakeStream) -> None:
    fake.plans.append([established(heartbeat_interval=0.2), notification(nid(7)), Hang()])
    fake.plans.append([established(heartbeat_interval=30), Hang()])
    start(page, ["t1"])
    wait_for(lambda: len(fake.attempts) == 2, 10, what="a reconnect after 2.5 silent heartbeat intervals")
    assert fake.attempts[1].query.get("last_event_id") == nid(7), "its own reconnect resumes by query"
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)


def test_heartbeats_keep_the_stream(page: Any, fake: FakeStream) -> None:
    beats: list[Any] = [established(heartbeat_interval=0.2)]
    for _ in range(10):
        beats += [Pause(0.15), frame("heartbeat", {"timestamp": "x"})]
    fake.plans.append([*beats, Hang()])
    fake.plans.append([established(), Hang()])
    start(page, ["t1"])
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    page.wait_for_timeout(1600)  # the ten heartbeats, each inside the watchdog's 0.5 s window
    assert len(fake.attempts) == 1
    # The watchdog was armed all along: once the heartbeats stop, it reconnects.
    wait_for(lambda: len(fake.attempts) == 2, 10, what="a reconnect after the heartbeats stopped")


def test_token_expired_closing_asks_get_token_and_resumes(page: Any, fake: FakeStream) -> None:
    fake.plans.append([established(), notification(nid(9)), frame("stream.closing", {"reason": "token_expired"})])
    fake.plans.append([established(), Hang()])
    start(page, ["old", "new"])
    wait_for(lambda: len(fake.attempts) == 2, 10, what="a reconnect with a new token")
    assert fake.attempts[1].token == "new"
    assert fake.attempts[1].query["last_event_id"] == nid(9)
    assert state(page)["log"]["tokenCalls"] == 2


def test_a_401_leads_to_a_fresh_token(page: Any, fake: FakeStream) -> None:
    # The token is accepted at start, then refused (it expired): the stream answers 401, which EventSource
    # does not expose, so the client asks the history API why, and renews the token.
    fake.refused_tokens.add("stale")
    fake.refuse_from_call = 2
    fake.plans.append(401)
    fake.plans.append([established(), Hang()])
    start(page, ["stale", "fresh"])
    wait_for(lambda: len(fake.attempts) == 2, 10, what="a second attempt with a fresh token")
    assert fake.attempts[0].token == "stale"
    assert fake.attempts[1].token == "fresh"
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert state(page)["log"]["tokenCalls"] == 2


def test_truncated_replay_reloads_history(page: Any, fake: FakeStream) -> None:
    fake.history = {
        "notifications": [{**_stored(nid(20)), "read": False}],
        "unread_count": 150,
        "next_cursor": nid(20),
    }
    fake.plans.append([established(), frame("replay.truncated", {"missed_at_least": 120}), Hang()])
    start(page, ["t1"])
    page.wait_for_function("() => window.log.truncated.length === 1", timeout=WAIT_MS)
    assert len(fake.history_calls) >= 2, "history at start, and again after the truncation"
    assert state(page)["log"]["truncated"] == [{"missed_at_least": 120}]
    assert state(page)["unread"] == 150


def test_failures_back_off_with_growing_delays(page: Any, fake: FakeStream) -> None:
    for _ in range(5):
        fake.plans.append(503)
    fake.plans.append([established(), Hang()])
    start(page, ["t1"], minBackoffMs=200, maxBackoffMs=5000)
    page.wait_for_function("() => client.state === 'connected'", timeout=20_000)
    gaps = [b.at - a.at for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
    assert len(gaps) == 5
    # Attempt k waits between half and all of 200 ms * 2^k: the third gap exceeds the first by design.
    assert gaps[0] >= 0.1 and gaps[2] >= 0.4 and gaps[4] >= 1.6, gaps


def test_backoff_delay_bounds(page: Any) -> None:
    bounds = page.evaluate(
        "() => [0, 1, 2, 5, 10, 40].map(k => [backoffDelay(k, 1000, 30000, () => 0),"
        " backoffDelay(k, 1000, 30000, () => 0.999999)])"
    )
    assert bounds == [[500, 1000], [1000, 2000], [2000, 4000], [15000, 30000], [15000, 30000], [15000, 30000]]


def test_token_expiry_is_read_from_the_jwt(page: Any) -> None:
    import jwt

    token = jwt.encode({"sub": "u", "exp": 1234567890}, "k" * 32, algorithm="HS256")
    assert page.evaluate("t => tokenExpiry(t)", token) == 1234567890
    assert page.evaluate("() => tokenExpiry('not a jwt')") is None


def _stored(notification_id: str) -> dict[str, Any]:
    return {
        "id": notification_id,
        "event_type": "system.update",
        "user_id": "u",
        "content_request_id": None,
        "title": "t",
        "message": "m",
        "progress_percentage": None,
        "metadata": {},
        "timestamp": "2026-11-28T10:00:00Z",
        "created_at": "2026-11-28T10:00:00Z",
        "read": False,
    }


def test_coming_back_online_cuts_a_long_backoff_short(page: Any, fake: FakeStream, context: Any) -> None:
    fake.plans.append(503)
    fake.plans.append([established(), Hang()])
    start(page, ["t1"], minBackoffMs=20_000, maxBackoffMs=30_000)
    page.wait_for_function("() => client.state === 'disconnected' && window.log.states.includes('error')")
    context.set_offline(True)
    context.set_offline(False)
    page.wait_for_function("() => client.state === 'connected'", timeout=5_000)  # not the 10-20 s backoff
    assert len(fake.attempts) == 2


def test_a_token_the_server_keeps_refusing_is_retried_with_backoff(page: Any, fake: FakeStream) -> None:
    fake.refused_tokens.add("bad")
    fake.refuse_from_call = 2
    for _ in range(4):
        fake.plans.append(401)
    start(page, ["bad"], minBackoffMs=200, maxBackoffMs=5000)
    wait_for(lambda: len(fake.attempts) == 4, 15, what="four refused attempts")
    gaps = [b.at - a.at for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[2] >= 0.4, gaps  # growing, not a tight loop
    assert state(page)["log"]["tokenCalls"] >= 4


@pytest.mark.parametrize(("status", "code"), [(429, "too_many_connections"), (503, "unavailable")])
def test_retry_after_is_honoured(page: Any, fake: FakeStream, status: int, code: str) -> None:
    fake.plans.append(Refuse(status, code, {"Retry-After": "2"}))
    fake.plans.append([established(), Hang()])
    start(page, ["t1"], minBackoffMs=50, maxBackoffMs=100)
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    gap = fake.attempts[1].at - fake.attempts[0].at
    # Not the 25-50 ms of the backoff: the 2 s the server asked for, plus at most a quarter of jitter.
    assert 2.0 <= gap < 2.5 + 0.5, gap


def test_an_http_date_retry_after_is_honoured_too(page: Any, fake: FakeStream) -> None:
    from email.utils import formatdate

    fake.plans.append(Refuse(503, "unavailable", {"Retry-After": formatdate(time.time() + 3, usegmt=True)}))
    fake.plans.append([established(), Hang()])
    start(page, ["t1"], minBackoffMs=50, maxBackoffMs=100)
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert fake.attempts[1].at - fake.attempts[0].at >= 1.0  # whole seconds: the date may round down


def test_a_refused_ticket_costs_a_new_ticket_not_a_new_token(page: Any, fake: FakeStream) -> None:
    fake.plans.append(Refuse(401, "ticket_used"))
    fake.plans.append([established(), Hang()])
    start(page, ["t1"], minBackoffMs=50, maxBackoffMs=100)
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert len(fake.ticket_calls) == 2 and fake.attempts[1].token == "t1"
    assert state(page)["log"]["tokenCalls"] == 1


def test_a_refused_ticket_request_renews_the_token(page: Any, fake: FakeStream) -> None:
    fake.refuse_tickets = 1
    start(page, ["expired", "fresh"])
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert fake.ticket_calls == ["expired", "fresh"]
    assert [a.token for a in fake.attempts] == ["fresh"]


def test_the_token_never_appears_in_a_url(page: Any, fake: FakeStream) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    fake.plans.append([established(retry_ms=100), notification(nid(1))])
    fake.plans.append([established(), Hang()])
    start(page, ["secret-token-value"])
    wait_for(lambda: len(fake.attempts) == 2, 10, what="two stream attempts")
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert any("/stream?ticket=" in url for url in urls)
    assert not [url for url in urls if "secret-token-value" in url]


def test_token_mode_puts_the_token_in_the_query(page: Any, fake: FakeStream) -> None:
    start(page, ["t1"], streamAuth="token")
    page.wait_for_function("() => client.state === 'connected'", timeout=WAIT_MS)
    assert fake.attempts[0].query["token"] == "t1" and fake.ticket_calls == []
