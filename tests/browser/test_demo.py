"""The demo notification center in headless Chromium, against the real stack on the emulators.

Events go in the way a worker sends them (published to the content topic; the
push subscription triggers the ingest function; the stream service fans out),
and the assertions are on what the page shows.
"""

from __future__ import annotations

import signal
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from devtools.emulators import free_port
from functions.stream.config import StreamSettings
from shared.notification import iso
from shared.tokens import mint_token
from tests.support.browser import ARTIFACTS, StreamServer, Worker, record_figure
from tests.support.processes import start_server

BADGE = '[data-testid="notification-unread-badge"]'
BELL = '[data-testid="notification-bell"]'
POPOVER = '[data-testid="notification-popover"]'
INDICATOR = '[data-testid="notification-connection-indicator"]'
ITEM = '[data-testid="notification-item"]'
WAIT_MS = 15_000


def open_demo(context: Any, server: StreamServer, query: str) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{server.url}/demo?{query}")
    wait_connected(page)
    return page


def wait_connected(page: Any, timeout: int = WAIT_MS) -> None:
    page.wait_for_selector(f'{INDICATOR}[data-connected="true"]', state="attached", timeout=timeout)


def badge_count(page: Any) -> int:
    text = page.evaluate(
        f"() => {{ const b = document.querySelector('{BADGE}'); return b.hidden ? '0' : b.textContent; }}"
    )
    return int(text)


def wait_badge(page: Any, count: int, timeout: int = WAIT_MS) -> None:
    page.wait_for_function(
        f"""n => {{ const b = document.querySelector('{BADGE}');
                   return n === 0 ? b.hidden : (!b.hidden && b.textContent === String(n)); }}""",
        arg=count,
        timeout=timeout,
    )


def client_ids(page: Any) -> list[str]:
    return list(page.evaluate("() => window.notificationClient.notifications.map(n => n.id)"))


def card(page: Any, request_id: str) -> Any:
    return page.locator(f'{ITEM}[data-request-id="{request_id}"]')


def progress_of(page: Any, request_id: str) -> str | None:
    bar = card(page, request_id).locator('[data-testid="notification-progress"]')
    return bar.get_attribute("aria-valuenow") if bar.count() else None


def test_published_event_appears_live_with_badge(context: Any, stream_server: StreamServer, worker: Worker) -> None:
    page = open_demo(context, stream_server, f"user={worker.user_id}")
    assert badge_count(page) == 0
    page.click(BELL)
    seconds = []
    for number in range(1, 6):
        started = time.monotonic()
        worker.publish(title=f"Video {number} ready", content_request_id=f"req-{number}")
        wait_badge(page, number)
        page.wait_for_selector(f'{ITEM}[data-request-id="req-{number}"]', timeout=WAIT_MS)
        seconds.append(time.monotonic() - started)
    titles = page.locator(f"{ITEM} .title").all_inner_texts()
    assert titles == [f"Video {n} ready" for n in range(5, 0, -1)], "newest first"
    assert page.get_attribute(BELL, "aria-label") == "Notifications, 5 unread"
    median = round(statistics.median(seconds), 3)
    figures = {"samples_s": [round(s, 3) for s in seconds], "median_s": median}
    record_figure("publish_to_visible", figures)
    print(f"publish (content topic) -> visible in Chromium: {figures}")
    # SPEC promise for the demo: visible within 2 s. The median, so one noisy sample on a shared machine
    # does not fail the run while a real regression (seconds per event) still does.
    assert median < 2.0, figures
    assert page.errors == []


def test_progress_and_completion_update_one_card_and_never_go_backwards(
    context: Any, stream_server: StreamServer, worker: Worker
) -> None:
    page = open_demo(context, stream_server, f"user={worker.user_id}")
    page.click(BELL)
    start = datetime.now(UTC) - timedelta(minutes=1)

    def progress(percent: int, at: float) -> None:
        worker.publish(
            event_type="content_generation.progress",
            title="Rendering your video",
            message=f"{percent}% done",
            content_request_id="req-render",
            progress_percentage=percent,
            timestamp=iso(start + timedelta(seconds=at)),
        )

    progress(30, 1)
    page.wait_for_function(
        "() => document.querySelector('[data-request-id=\"req-render\"] [role=progressbar]')"
        "?.getAttribute('aria-valuenow') === '30'",
        timeout=WAIT_MS,
    )
    wait_badge(page, 1)
    progress(70, 3)
    page.wait_for_function(
        "() => document.querySelector('[data-request-id=\"req-render\"] [role=progressbar]')"
        "?.getAttribute('aria-valuenow') === '70'",
        timeout=WAIT_MS,
    )
    assert page.evaluate("() => notificationClient.notifications.length") == 1, "the server keeps one notification"
    wait_badge(page, 1)
    worker.publish(title="Scheduled maintenance", message="Tonight 02:00-02:30 UTC", event_type="system.maintenance")
    wait_badge(page, 2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-progress.png"))
    progress(50, 2)  # happened before the 70 % event, arrives after it: the server ignores it
    worker.publish(
        event_type="content_generation.completed",
        title="Video ready!",
        message="Your video is ready to watch.",
        content_request_id="req-render",
        progress_percentage=100,
        timestamp=iso(start + timedelta(seconds=4)),
    )
    page.wait_for_function(
        "() => document.querySelector('[data-request-id=\"req-render\"]')?.dataset.eventType"
        " === 'content_generation.completed'",
        timeout=WAIT_MS,
    )
    wait_badge(page, 2)
    page.wait_for_selector('[data-testid="notification-toast"].completed', timeout=WAIT_MS)
    progress(90, 3.5)  # a straggler after completion
    worker.publish(title="Barrier", message="published after the straggler", event_type="system.update")
    wait_badge(page, 3)
    assert card(page, "req-render").get_attribute("data-event-type") == "content_generation.completed"
    assert progress_of(page, "req-render") is None
    assert card(page, "req-render").count() == 1, "one card per content request"
    history = page.evaluate("() => notificationClient.request('GET', '?limit=100')")
    assert sum(1 for n in history["notifications"] if n["content_request_id"] == "req-render") == 1
    page.screenshot(path=str(ARTIFACTS / "demo-notification-center.png"))
    assert page.errors == []


def test_mark_read_in_one_tab_clears_the_badge_in_another(
    context: Any, stream_server: StreamServer, worker: Worker
) -> None:
    first = open_demo(context, stream_server, f"user={worker.user_id}")
    second = open_demo(context, stream_server, f"user={worker.user_id}")
    worker.publish(title="First video", content_request_id="req-a")
    worker.publish(title="Second video", content_request_id="req-b")
    wait_badge(first, 2)
    wait_badge(second, 2)
    first.click(BELL)
    card(first, "req-a").get_by_role("button", name="Mark read: First video").click()
    wait_badge(second, 1)
    wait_badge(first, 1)
    first.get_by_role("button", name="Mark all read").click()
    wait_badge(second, 0)
    second.click(BELL)
    assert second.locator(f"{ITEM}.unread").count() == 0
    assert second.locator(f"{ITEM}.read").count() == 2


def test_keyboard_opens_and_closes_the_panel(context: Any, stream_server: StreamServer, worker: Worker) -> None:
    page = open_demo(context, stream_server, f"user={worker.user_id}")
    page.focus(BELL)
    page.keyboard.press("Enter")
    assert page.is_visible(POPOVER)
    assert page.get_attribute(BELL, "aria-expanded") == "true"
    assert page.evaluate(f"() => document.querySelector('{POPOVER}').contains(document.activeElement)")
    page.keyboard.press("Escape")
    assert page.is_hidden(POPOVER)
    assert page.get_attribute(BELL, "aria-expanded") == "false"
    assert page.evaluate(f"() => document.activeElement === document.querySelector('{BELL}')")
    assert page.get_attribute(POPOVER, "role") == "dialog"
    assert page.get_attribute(INDICATOR, "role") == "status"


def test_expiring_token_is_renewed_through_get_token(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    short = mint_token(worker.user_id, stack_settings, ttl_seconds=8)
    page = context.new_page()
    with page.expect_request(lambda request: "/demo/token" in request.url, timeout=30_000) as renewal:
        page.goto(f"{stream_server.url}/demo?token={short}")
        wait_connected(page)
        assert "token=" not in page.url, "the token stays out of the address bar"
        # The server ends the stream when the token expires (stream.closing token_expired).
    assert f"user={worker.user_id}" in renewal.value.url
    page.wait_for_function("t => window.notificationClient.token !== t", arg=short, timeout=WAIT_MS)
    wait_connected(page)
    worker.publish(title="After renewal", content_request_id="req-renewed")
    wait_badge(page, 1)
    assert page.evaluate("() => window.notificationClient.notifications[0].title") == "After renewal"


def test_rejected_token_is_replaced(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    forged = jwt.encode(
        {"sub": worker.user_id, "exp": int(time.time()) + 3600, "type": "access"}, "x" * 40, algorithm="HS256"
    )
    page = context.new_page()
    with page.expect_request(lambda request: "/demo/token" in request.url, timeout=WAIT_MS):
        page.goto(f"{stream_server.url}/demo?token={forged}")
    wait_connected(page)
    worker.publish(title="Seen with the new token", content_request_id="req-401")
    wait_badge(page, 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "crash"])
def test_page_recovers_every_missed_notification_after_a_stream_restart(
    context: Any, stream_server: StreamServer, worker: Worker, sig: signal.Signals
) -> None:
    page = open_demo(context, stream_server, f"user={worker.user_id}")
    worker.publish(title="Before the restart", content_request_id="req-0")
    wait_badge(page, 1)
    stream_server.stop(sig)  # SIGKILL: no stream.closing, the connection just drops
    page.wait_for_selector(f'{INDICATOR}[data-connected="false"]', state="attached", timeout=WAIT_MS)
    for number in range(1, 4):
        worker.publish(title=f"During the gap {number}", content_request_id=f"req-{number}")
    stream_server.start()
    wait_badge(page, 4, timeout=60_000)
    wait_connected(page)
    ids = client_ids(page)
    assert len(ids) == 4 and len(set(ids)) == 4, ids
    titles = page.evaluate("() => window.notificationClient.notifications.map(n => n.title)")
    # Newest first by id; ids order by persistence time, and the ingest function
    # may persist the three gap events in any order (pushes are concurrent).
    assert ids == sorted(ids, reverse=True)
    assert titles[3] == "Before the restart"
    assert sorted(titles[:3]) == ["During the gap 1", "During the gap 2", "During the gap 3"]
    # Still live after the reconnect, and nothing arrives twice.
    worker.publish(title="After the restart", content_request_id="req-4")
    wait_badge(page, 5)
    assert len(set(client_ids(page))) == len(client_ids(page)) == 5
    assert page.locator(ITEM).count() == 5


def test_delete_and_clear_all_reach_every_tab(context: Any, stream_server: StreamServer, worker: Worker) -> None:
    first = open_demo(context, stream_server, f"user={worker.user_id}")
    second = open_demo(context, stream_server, f"user={worker.user_id}")
    for name in ("x", "y", "z"):
        worker.publish(title=f"Video {name}", content_request_id=f"req-{name}")
    wait_badge(second, 3)
    first.click(BELL)
    card(first, "req-x").get_by_role("button", name="Delete: Video x").click()
    wait_badge(second, 2)
    second.wait_for_function(f"() => document.querySelectorAll('{ITEM}').length === 2", timeout=WAIT_MS)
    assert card(second, "req-x").count() == 0
    first.get_by_role("button", name="Clear all").click()
    wait_badge(second, 0)
    second.wait_for_function(f"() => document.querySelectorAll('{ITEM}').length === 0", timeout=WAIT_MS)
    second.click(BELL)
    assert second.is_visible("text=No notifications yet.")


def test_local_publish_form_goes_through_the_content_topic(
    context: Any, stream_server: StreamServer, worker: Worker
) -> None:
    page = open_demo(context, stream_server, f"user={worker.user_id}")
    form = page.locator("form.publish")
    form.wait_for(state="visible", timeout=WAIT_MS)  # /demo/local answered: a local run
    page.select_option("select[name=event_type]", "content_generation.failed")
    page.fill("input[name=title]", "Rendering failed")
    page.fill("input[name=message]", "The GPU went away.")
    page.fill("input[name=content_request_id]", "req-form")
    page.fill("input[name=progress_percentage]", "")
    page.get_by_role("button", name="Publish").click()
    page.wait_for_selector('[data-testid="notification-toast"].failed', timeout=WAIT_MS)
    assert "published (topic content-generation-events)" in page.inner_text(".publish-result")
    assert card(page, "req-form").get_attribute("data-event-type") == "content_generation.failed"
    assert page.evaluate("() => window.notificationClient.notifications[0].user_id") == worker.user_id


def test_demo_on_the_production_service_needs_only_a_token(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    """The plain service (DEMO_PAGE on, no development routes): no form, the token from ?token= is enough."""
    port = free_port()
    command = [sys.executable, "-m", "functions.stream.serve", "--host", "127.0.0.1", "--port", str(port)]
    server = start_server(command, stream_server.env, port)
    try:
        token = mint_token(worker.user_id, stack_settings, ttl_seconds=600)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/demo?token={token}")
        wait_connected(page)
        worker.publish(title="Served by the production app", content_request_id="req-prod")
        wait_badge(page, 1)
        assert page.is_hidden("form.publish"), "the publish form exists only in local runs"
    finally:
        server.stop()


def _feed_state(page: Any) -> Any:
    return page.evaluate(
        "() => ({list: notificationClient.notifications.map(n => [n.id, n.event_type, n.progress_percentage, n.read]),"
        " unread: notificationClient.unreadCount})"
    )


def test_a_tab_that_was_away_while_another_marked_the_card_read_ends_in_the_same_state(
    context: Any, chromium: Any, stream_server: StreamServer, worker: Worker
) -> None:
    """One card, badge 1, through a lifecycle; page A drops its stream mid-way and resumes by Last-Event-ID."""
    other_context = chromium.new_context()
    try:
        away = open_demo(context, stream_server, f"user={worker.user_id}")
        other = open_demo(other_context, stream_server, f"user={worker.user_id}")
        start = datetime.now(UTC) - timedelta(minutes=1)

        def step(event_type: str, percent: int | None, at: float) -> None:
            worker.publish(
                event_type=event_type,
                title="Rendering your video",
                message=f"{event_type} {percent}",
                content_request_id="req-away",
                progress_percentage=percent,
                timestamp=iso(start + timedelta(seconds=at)),
            )

        step("content_generation.started", 0, 1)
        for page in (away, other):
            wait_badge(page, 1)
        # The connection drops (no stream.closing); the client keeps its cursor.
        away.evaluate("() => notificationClient.closeStream()")
        step("content_generation.progress", 40, 2)
        other.wait_for_function(
            "() => notificationClient.notifications[0]?.progress_percentage === 40", timeout=WAIT_MS
        )
        other.click(BELL)
        card(other, "req-away").get_by_role("button", name="Mark read: Rendering your video").click()
        wait_badge(other, 0)
        step("content_generation.progress", 80, 3)  # intermediate: stays read
        other.wait_for_function(
            "() => notificationClient.notifications[0]?.progress_percentage === 80", timeout=WAIT_MS
        )
        assert badge_count(other) == 0
        away.evaluate("() => notificationClient.connect()")  # resumes with lastEventId: the replay
        away.wait_for_function("() => notificationClient.notifications[0]?.progress_percentage === 80", timeout=WAIT_MS)
        wait_badge(away, 0)
        assert _feed_state(away) == _feed_state(other)
        assert card(away, "req-away").count() == 1

        step("content_generation.completed", 100, 4)  # the end makes it unread again, in both tabs
        for page in (away, other):
            wait_badge(page, 1)
            page.wait_for_function(
                "() => notificationClient.notifications[0]?.event_type === 'content_generation.completed'",
                timeout=WAIT_MS,
            )
        assert _feed_state(away) == _feed_state(other)
        assert len(_feed_state(away)["list"]) == 1
        assert away.errors == [] and other.errors == []
    finally:
        other_context.close()
