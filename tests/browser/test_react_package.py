"""The npm package as a React team uses it: packed, installed into an app, bundled, run in Chromium.

``npm pack`` makes the tarball of clients/web; a copy of tests/browser/react_app
installs its own locked dependencies, then the tarball, and bundles itself with
esbuild. The app runs on its own origin and talks to the real stream service on
another (CORS), on the emulators, with events published as a worker does.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles

from devtools.emulators import free_port
from functions.stream.config import StreamSettings
from shared.backends.firestore_store import FirestoreStore
from shared.events import ContentEvent
from shared.notification import build_notification
from shared.tokens import mint_token
from tests.browser.npm import ensure_installed, npm, pack
from tests.support import ROOT
from tests.support.browser import ARTIFACTS, HEARTBEAT_SECONDS, StreamServer, Worker, record_figure
from tests.support.emulators import EmulatorPair
from tests.support.processes import ManagedProcess
from tests.support.waiting import port_open, wait_for

APP_SOURCE = Path(__file__).resolve().parent / "react_app"
CENTER = '[data-testid="notification-center"]'
BELL = '[data-testid="notification-bell"]'
BADGE = '[data-testid="notification-unread-badge"]'
PANEL = '[data-testid="notification-panel"]'
ITEM = '[data-testid="notification-item"]'
TOAST = '[data-testid="notification-toast"]'
WAIT_MS = 20_000


@dataclass
class App:
    url: str
    tarball: dict[str, Any]


@pytest.fixture(scope="module")
def react_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app built from the packed tarball, served on an origin of its own."""
    work = tmp_path_factory.mktemp("react-app")
    report = pack(work)
    app = work / "app"
    shutil.copytree(APP_SOURCE, app, ignore=shutil.ignore_patterns("node_modules", "dist"))
    ensure_installed(app)
    npm(["install", str(work / report["filename"])], app)
    npm(["run", "build"], app)
    installed = app / "node_modules" / "@content-notifications" / "web"
    assert (installed / "dist" / "react" / "index.d.ts").is_file(), "the tarball carries its declarations"
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[]),
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level=None,
            access_log=False,
        )
    )
    server.config.app = StaticFiles(directory=app / "dist", html=True)
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: port_open("127.0.0.1", port), 10, what="the app's static server")
    yield App(f"http://127.0.0.1:{port}", report)
    server.should_exit = True


@pytest.fixture(scope="module")
def api(react_app: App, emulators_session: EmulatorPair, ingest_push: ManagedProcess) -> Iterator[StreamServer]:
    """The stream service with the app's origin allowed (CORS)."""
    env = {
        **os.environ,
        **emulators_session.env(),
        "PYTHONPATH": str(ROOT),
        "DEMO_PAGE": "false",
        "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT_SECONDS),
        "SSE_RETRY_MS": "1000",
        "CORS_ALLOWED_ORIGINS": react_app.url,
    }
    server = StreamServer(env)
    server.start()
    yield server
    server.stop()


def open_app(context: Any, react_app: App, api: StreamServer, token: str) -> tuple[Any, list[str]]:
    page = context.new_page()
    urls: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.expose_function("getTestToken", lambda: token)
    page.goto(f"{react_app.url}/?api={api.url}")
    page.wait_for_selector(f'{CENTER}[data-connection="connected"]', state="attached", timeout=WAIT_MS)
    return page, urls


def badge(page: Any) -> str | None:
    located = page.locator(BADGE)
    return str(located.inner_text()) if located.count() else None


def test_the_packed_package_renders_receives_and_marks_read(
    context: Any, react_app: App, api: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    token = mint_token(worker.user_id, stack_settings, ttl_seconds=600)
    page, urls = open_app(context, react_app, api, token)
    assert badge(page) is None
    assert page.get_attribute(BELL, "aria-label") == "Notifications, none unread"

    worker.publish(
        event_type="content_generation.progress",
        title="Rendering your video",
        message="40% done",
        content_request_id="req-render",
        progress_percentage=40,
    )
    page.wait_for_function(f"() => document.querySelector('{BADGE}')?.textContent === '1'", timeout=WAIT_MS)
    worker.publish(
        event_type="content_generation.failed",
        title="Rendering failed",
        message="The GPU went away.",
        content_request_id="req-failed",
    )
    # Stored before the next is published: two events published at once may be stored (and so
    # ordered) either way round, since the push delivers them to ingest concurrently.
    page.wait_for_function(f"() => document.querySelector('{BADGE}')?.textContent === '2'", timeout=WAIT_MS)
    worker.publish(title="Video ready!", message="Your video is ready to watch.", content_request_id="req-done")
    page.wait_for_function(f"() => document.querySelector('{BADGE}')?.textContent === '3'", timeout=WAIT_MS)
    assert page.get_attribute(BELL, "aria-label") == "Notifications, 3 unread"
    page.wait_for_selector(f'{TOAST}[data-kind="completed"]', timeout=WAIT_MS)
    page.wait_for_selector(f'{TOAST}[data-kind="failed"]', timeout=WAIT_MS)
    assert page.locator(TOAST).count() == 2, "toasts for completed and failed only"
    announcer = page.locator('[data-testid="notification-announcer"]')
    assert announcer.get_attribute("aria-live") == "polite"
    page.wait_for_function(
        "() => document.querySelector('[data-testid=notification-announcer]').textContent.includes("
        "'New notification: Video ready!')",
        timeout=WAIT_MS,
    )
    assert "Failed: Rendering failed" in announcer.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "react-bell-badge.png"))
    page.locator(TOAST).first.screenshot(path=str(ARTIFACTS / "react-toast.png"))

    # Keyboard: Enter on the bell opens the panel with focus inside; Escape closes it onto the bell.
    page.focus(BELL)
    page.keyboard.press("Enter")
    page.wait_for_selector(PANEL, timeout=WAIT_MS)
    assert page.get_attribute(BELL, "aria-expanded") == "true"
    assert page.get_attribute(PANEL, "role") == "dialog"
    assert page.evaluate(f"() => document.querySelector('{PANEL}').contains(document.activeElement)")
    titles = page.locator(f"{ITEM} .nc-item-title").all_inner_texts()
    assert titles == ["Video ready!", "Rendering failed", "Rendering your video"], "newest first"
    assert page.locator(f'{ITEM} [role="progressbar"]').get_attribute("aria-valuenow") == "40"
    page.screenshot(path=str(ARTIFACTS / "react-panel.png"))

    page.get_by_role("button", name="Mark read: Video ready!").click()
    page.wait_for_function(f"() => document.querySelector('{BADGE}')?.textContent === '2'", timeout=WAIT_MS)
    done = page.locator(f"{ITEM}", has_text="Video ready!")
    assert done.get_attribute("data-read") == "true"

    def history_once_stored() -> dict[str, Any] | None:
        # The page marks read at once and sends the request alongside (client.ts), so the badge
        # can show 2 before the server has stored it: wait for the server, within a bound.
        body: dict[str, Any] = httpx.get(
            f"{api.url}/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        return body if body["unread_count"] != 3 else None

    history = wait_for(history_once_stored, timeout=WAIT_MS / 1000, what="the mark-read to reach the server")
    assert history["unread_count"] == 2, "marked read on the server, not only on the page"
    assert [n["read"] for n in history["notifications"] if n["title"] == "Video ready!"] == [True]
    page.keyboard.press("Escape")
    assert page.locator(PANEL).count() == 0
    assert page.evaluate(f"() => document.activeElement === document.querySelector('{BELL}')")
    page.locator(TOAST).first.get_by_role("button", name="Dismiss").click()
    assert page.locator(TOAST).count() == 1

    assert any("/stream?ticket=" in url for url in urls), "the stream is opened with a ticket"
    assert not [url for url in urls if token in url or token.split(".")[2] in url], "the JWT is in no URL"
    assert page.errors == []
    record_figure(
        "npm_pack",
        {
            "filename": react_app.tarball["filename"],
            "size_bytes": react_app.tarball["size"],
            "unpacked_bytes": react_app.tarball["unpackedSize"],
            "files": react_app.tarball["entryCount"],
        },
    )


def test_the_badge_caps_at_99_plus(
    context: Any, react_app: App, api: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    store = FirestoreStore(stack_settings.project_id)
    start = datetime.now(UTC) - timedelta(minutes=5)
    try:
        for number in range(120):
            event = ContentEvent(
                event_type="system.update",
                user_id=worker.user_id,
                title=f"Update {number}",
                message="",
                event_id=f"e{number}",
            )
            store.apply(build_notification(event, 30, start + timedelta(milliseconds=number)))
    finally:
        store.close()
    page, _ = open_app(context, react_app, api, mint_token(worker.user_id, stack_settings, ttl_seconds=600))
    page.wait_for_function(f"() => document.querySelector('{BADGE}')?.textContent === '99+'", timeout=WAIT_MS)
    assert page.get_attribute(BELL, "aria-label") == "Notifications, 120 unread", "the label says the real count"
