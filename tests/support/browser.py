"""The browser tests' pieces: Debian's Chromium, the stream service they restart, a worker, figures."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from devtools.cli import publish_event
from devtools.emulators import free_port
from functions.stream.config import StreamSettings
from tests.support import ROOT
from tests.support.processes import ManagedProcess, start_server
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


class StreamServer:
    """The stream service (with the local routes) as a subprocess that can be stopped and started again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = env
        self.process: ManagedProcess | None = None

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
        self.process = start_server(command, self.env, self.port)
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


def record_figure(name: str, value: Any) -> None:
    """Keep a measurement of the run under artifacts/ (gitignored) for the report."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "browser-figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2) + "\n")
