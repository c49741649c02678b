"""One stream per browser: the tabs of one origin and user share the stream of the tab that holds it.

Against the real stack (emulators, ingest behind the content topic, the stream
service). The service's own /metrics counts its open streams.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import Any

import httpx
from playwright.sync_api import Error as PlaywrightError

from functions.stream.config import StreamSettings
from shared.tokens import mint_token
from tests.support.browser import HEARTBEAT_SECONDS, StreamServer, Worker, record_figure
from tests.support.waiting import wait_for

INDICATOR = '[data-testid="notification-connection-indicator"]'
BADGE = '[data-testid="notification-unread-badge"]'
WAIT_MS = 20_000
TICKETS = "**/api/v1/notifications/stream-ticket"

# A page of the service's origin with a bare client on it (no demo UI), for the figures without sharing.
BARE_CLIENT = """async (shareTabs) => {
  const { NotificationClient } = await import("/api/v1/notifications/client.js");
  window.log = { states: [] };
  window.client = new NotificationClient({
    getToken: () => window.getTestToken(),
    shareTabs,
    onStateChange: (state, detail) => window.log.states.push({ state, ...detail, error: undefined }),
  });
  await window.client.start();
}"""


def metric(server: StreamServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def streams_open(server: StreamServer) -> int:
    return int(metric(server, "sse_streams_open"))


def no_streams(server: StreamServer) -> None:
    wait_for(lambda: streams_open(server) == 0, 15, what="the streams of earlier tests to close")


def open_tab(context: Any, server: StreamServer, user: str) -> Any:
    page = context.new_page()
    page.urls = []
    page.on("request", lambda request: page.urls.append(request.url))
    page.goto(f"{server.url}/demo?user={user}")
    page.wait_for_selector(f'{INDICATOR}[data-connected="true"]', state="attached", timeout=WAIT_MS)
    # Count what each tab announces (onNotification): exactly once per notification is the promise.
    page.evaluate(
        "() => { window.seen = {}; notificationClient.addNotificationListener("
        "n => { window.seen[n.id] = (window.seen[n.id] ?? 0) + 1; }); }"
    )
    return page


def role(page: Any) -> str:
    return str(page.evaluate("() => notificationClient.role"))


def leaders(pages: list[Any]) -> list[Any]:
    return [page for page in pages if role(page) == "leader"]


def shows_once(page: Any, request_id: str) -> bool:
    return bool(
        page.evaluate(
            """r => {
              const ids = notificationClient.notifications.filter(n => n.content_request_id === r).map(n => n.id);
              return ids.length === 1 && window.seen[ids[0]] === 1
                && document.querySelectorAll(`[data-request-id="${r}"]`).length === 1;
            }""",
            request_id,
        )
    )


def wait_everywhere(pages: list[Any], request_id: str) -> None:
    for page in pages:
        page.wait_for_function(
            "r => notificationClient.notifications.some(n => n.content_request_id === r)",
            arg=request_id,
            timeout=WAIT_MS,
        )


def stored(server: StreamServer, token: str, request_id: str) -> bool:
    page = httpx.get(
        f"{server.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    return any(n["content_request_id"] == request_id for n in page["notifications"])


def test_five_tabs_hold_one_stream_and_hand_it_over_without_loss_or_repeat(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    no_streams(stream_server)
    pages = [open_tab(context, stream_server, worker.user_id) for _ in range(5)]
    wait_for(lambda: len(leaders(pages)) == 1, 10, what="one tab to hold the stream")
    assert sorted(role(page) for page in pages) == ["follower"] * 4 + ["leader"]
    assert streams_open(stream_server) == 1
    time.sleep(HEARTBEAT_SECONDS)  # a heartbeat later: still one, no follower opened a stream of its own
    assert streams_open(stream_server) == 1
    record_figure("streams_for_5_tabs_shared", streams_open(stream_server))

    worker.publish(title="For every tab", content_request_id="req-all")
    wait_everywhere(pages, "req-all")
    assert all(shows_once(page, "req-all") for page in pages)

    # Hand-over, with a notification published while no tab holds a stream: the tabs that are left
    # wait for their ticket until it is stored, so it can only arrive by the new holder's replay.
    holder = leaders(pages)[0]
    rest = [page for page in pages if page is not holder]
    held: list[Any] = []
    released: list[bool] = []
    context.route(TICKETS, lambda route: route.continue_() if released else held.append(route))
    closed_at = time.monotonic()
    holder.close()
    # Playwright (sync) dispatches the route handler only while it is called: pump it while waiting.
    wait_for(lambda: rest[0].wait_for_timeout(20) or held, 10, what="another tab to take the stream over")
    takeover = time.monotonic() - closed_at
    wait_for(lambda: streams_open(stream_server) == 0, 10, what="the closed tab's stream to end")
    token = mint_token(worker.user_id, stack_settings, ttl_seconds=300)
    worker.publish(title="During the hand-over", content_request_id="req-gap")
    wait_for(lambda: stored(stream_server, token, "req-gap"), 20, what="the hand-over notification to be stored")
    released.append(True)
    for route in held:
        # A request the tab gave up on meanwhile (its watchdog asked again) cannot be continued.
        with contextlib.suppress(PlaywrightError):
            route.continue_()
    wait_everywhere(rest, "req-gap")
    assert all(shows_once(page, "req-gap") for page in rest), "missed or applied twice in a tab"
    assert len(leaders(rest)) == 1 and streams_open(stream_server) == 1
    context.unroute(TICKETS)

    # Again, unhindered: how long until the next tab streams.
    holder = leaders(rest)[0]
    rest = [page for page in rest if page is not holder]
    closed_at = time.monotonic()
    holder.close()

    def streaming_again() -> bool:
        found = leaders(rest)
        return bool(found) and found[0].evaluate("() => notificationClient.state") == "connected"

    wait_for(streaming_again, 10, what="the next tab to stream")
    streaming = time.monotonic() - closed_at
    wait_for(lambda: streams_open(stream_server) == 1, 10, what="one stream again")
    assert takeover < HEARTBEAT_SECONDS and streaming < HEARTBEAT_SECONDS, (takeover, streaming)
    record_figure("hand_over_s", {"lock_to_next_tab": round(takeover, 3), "close_to_streaming": round(streaming, 3)})

    worker.publish(title="After two hand-overs", content_request_id="req-after")
    wait_everywhere(rest, "req-after")
    assert all(shows_once(page, "req-after") for page in rest)

    # Read and delete from a tab that does not hold the stream reach every tab.
    follower = next(page for page in rest if role(page) == "follower")
    follower.evaluate("() => notificationClient.markAllRead()")
    for page in rest:
        page.wait_for_function(f"() => document.querySelector('{BADGE}').hidden", timeout=WAIT_MS)
    follower.evaluate(
        "() => notificationClient.remove(notificationClient.notifications.find(n => n.content_request_id"
        " === 'req-all').id)"
    )
    for page in rest:
        page.wait_for_function(
            "() => !notificationClient.notifications.some(n => n.content_request_id === 'req-all')", timeout=WAIT_MS
        )

    for page in rest:
        jwt = page.evaluate("() => notificationClient.token")
        assert not [url for url in page.urls if jwt in url], "the JWT is in no URL a tab requested"
        assert any("/stream?ticket=" in url for url in page.urls) or role(page) == "follower"


def test_without_sharing_five_tabs_meet_the_limit_and_wait_out_retry_after(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    """What each tab holding its own stream costs (the client before this change): the limit of 3."""
    no_streams(stream_server)
    rejected_before = metric(stream_server, 'sse_connects_rejected_total{reason="too_many_connections"}')
    token = mint_token(worker.user_id, stack_settings, ttl_seconds=600)
    pages = []
    for _ in range(5):
        page = context.new_page()
        page.expose_function("getTestToken", lambda: token)
        page.goto(f"{stream_server.url}/api/v1/notifications/health")
        page.evaluate(BARE_CLIENT, False)
        pages.append(page)
    wait_for(lambda: streams_open(stream_server) == 3, 15, what="three streams")

    def refused(page: Any) -> list[Any]:
        return list(page.evaluate("() => window.log.states.filter(s => s.status === 429)"))

    wait_for(lambda: sum(1 for page in pages if refused(page)) == 2, 15, what="two tabs refused with 429")
    rejected = metric(stream_server, 'sse_connects_rejected_total{reason="too_many_connections"}') - rejected_before
    for page in pages:
        if refused(page):
            # The 429 said Retry-After: 2 heartbeat intervals; the next attempt waits at least that.
            waits = page.evaluate("() => window.log.states.filter(s => s.retryInMs).map(s => s.retryInMs)")
            assert waits and waits[-1] >= 2 * HEARTBEAT_SECONDS * 1000, waits
    record_figure("streams_for_5_tabs_unshared", {"streams": streams_open(stream_server), "refused_429": rejected})
    assert streams_open(stream_server) == 3 and rejected >= 2
    for page in pages:
        page.evaluate("() => window.client.stop()")
    no_streams(stream_server)

    for page in pages:
        page.evaluate(BARE_CLIENT, True)
    wait_for(lambda: sum(1 for p in pages if p.evaluate("() => client.state") == "connected") == 5, 15, what="5 tabs")
    assert streams_open(stream_server) == 1
    record_figure("streams_for_5_tabs_bare_shared", streams_open(stream_server))


def test_tabs_of_different_users_never_share(context: Any, stream_server: StreamServer) -> None:
    no_streams(stream_server)
    users = [f"browser-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    pages = [open_tab(context, stream_server, user) for user in users for _ in range(2)]
    wait_for(lambda: streams_open(stream_server) == 2, 10, what="one stream per user")
    assert sorted(role(page) for page in pages) == ["follower", "follower", "leader", "leader"]
