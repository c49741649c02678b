"""The real stack for browser tests: emulators, ingest behind a push subscription, the stream service, Chromium.

The stream service runs as ``python -m functions.stream.serve --app devtools.local_app:app``
(what ``make run`` serves: the production app plus the local-only token and publish
routes) in a subprocess on a fixed port, so a test can restart it under an open page.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.stream.config import StreamSettings
from tests.support import ROOT, missing
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, HEARTBEAT_SECONDS, StreamServer, Worker
from tests.support.emulators import EmulatorPair
from tests.support.processes import ManagedProcess, start_function
from tests.support.pubsub import PullSubscription


@pytest.fixture(scope="module")
def stack_settings(settings: StreamSettings) -> StreamSettings:
    """The suite's settings (topics created by tests/conftest.py)."""
    return settings


@pytest.fixture(scope="module")
def ingest_push(emulators_session: EmulatorPair, stack_settings: StreamSettings) -> Iterator[ManagedProcess]:
    """The ingest function behind a push subscription on the content topic, for this module only.

    Module-scoped (not the emulator suite's session fixtures) so no second
    subscriber of the content topic outlives these tests and doubles the
    channel traffic other tests count.
    """
    server = start_function(
        "functions/ingest/main.py", "ingest_content_event", {**emulators_session.env(), "BACKEND_TIMEOUT_SECONDS": "5"}
    )
    endpoint = f"{server.url}/projects/{stack_settings.project_id}/topics/{stack_settings.content_events_topic}"
    subscription = PullSubscription(
        stack_settings.project_id, stack_settings.content_events_topic, push_endpoint=endpoint
    )
    yield server
    subscription.delete()
    server.stop()


@pytest.fixture(scope="module")
def stream_server(emulators_session: EmulatorPair, ingest_push: ManagedProcess) -> Iterator[StreamServer]:
    env = {
        **os.environ,
        **emulators_session.env(),
        "PYTHONPATH": str(ROOT),
        "DEMO_PAGE": "true",
        "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT_SECONDS),
        "SSE_RETRY_MS": "1000",
    }
    server = StreamServer(env)
    server.start()
    yield server
    server.stop()


# Per module, not per session: Playwright's sync API keeps an asyncio loop running on the main thread while
# it is started, which would make asyncio.run() fail in every test collected after the browser tests.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        missing(f"{CHROMIUM} is missing: apt-get install chromium (devtools/system-packages.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()


@pytest.fixture
def user() -> str:
    return f"browser-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker(stack_settings: StreamSettings, user: str) -> Worker:
    return Worker(stack_settings, user)
