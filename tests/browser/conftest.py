"""The real stack for browser tests: emulators, ingest behind a push subscription, the stream service, Chromium.

The stream service runs as ``python -m devtools.local_app`` (what ``make run``
serves: the production app plus the local-only token and publish routes) in a
subprocess on a fixed port, so a test can restart it under an open page.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cli import publish_event
from devtools.emulators import free_port
from functions.stream.config import StreamSettings
from tests.conftest import ROOT, EmulatorPair
from tests.support.processes import ServerProcess, start_function, start_process
from tests.support.pubsub import PullSubscription
from tests.support.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "artifacts"
HEARTBEAT_SECONDS = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/browser/" in str(item.path):
            item.add_marker(pytest.mark.browser)
            if "emulators_session" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.emulator)


class StreamServer:
    """The stream service (with the local routes) as a subprocess that can be stopped and started again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = env
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "functions.stream.serve",
            "--app",
            "devtools.local_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process = start_process(command, self.env, self.port)
        # Listening is not enough: the channel subscription is made in the lifespan.
        wait_for(self.healthy, 30, what="the stream service to report healthy")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/notifications/health", timeout=2) as response:  # noqa: S310
                return bool(json.load(response)["status"] == "healthy")
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.stop(sig)
            self.process = None

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""


@pytest.fixture(scope="module")
def stack_settings(settings: StreamSettings) -> StreamSettings:
    """The suite's settings (topics created by tests/support/gcp_fixtures.py)."""
    return settings


@pytest.fixture(scope="module")
def ingest_push(emulators_session: EmulatorPair, stack_settings: StreamSettings) -> Iterator[ServerProcess]:
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
def stream_server(emulators_session: EmulatorPair, ingest_push: ServerProcess) -> Iterator[StreamServer]:
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
        message = f"{CHROMIUM} is missing: apt-get install chromium (devtools/system-packages.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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


class Worker:
    """Publishes content events to the content topic, as a content-generation worker does."""

    def __init__(self, settings: StreamSettings, user_id: str) -> None:
        self.settings = settings
        self.user_id = user_id

    def publish(self, **fields: Any) -> str:
        event: dict[str, Any] = {
            "event_type": "content_generation.completed",
            "user_id": self.user_id,
            "title": "Video ready!",
            "message": "Your video is ready to watch.",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event_id": f"evt-{uuid.uuid4().hex}",
        }
        event.update(fields)
        return publish_event(self.settings.project_id, self.settings.content_events_topic, event)


@pytest.fixture
def worker(stack_settings: StreamSettings, user: str) -> Worker:
    return Worker(stack_settings, user)


def record_figure(name: str, value: Any) -> None:
    """Keep a measurement of the run under artifacts/ (gitignored) for the report."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "browser-figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2) + "\n")
