"""``make run`` (devtools/run.py) as a person uses it: start it, open what it prints, press Ctrl-C.

Each case starts ``python -m devtools.run`` in its own process group, reads the
demo URL and token it prints, checks the URL answers and the token opens a
stream that receives a published event, then sends SIGINT to the group (what a
terminal's Ctrl-C does) and checks that every process it started is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from devtools import emulators, run
from devtools.cli import publish_event
from devtools.emulators import free_port
from tests.support import ROOT
from tests.support.emulators import EmulatorPair
from tests.support.processes import alive, spawn
from tests.support.waiting import wait_for

SECRET = "make-run-test-secret-" + "x" * 20
EMULATOR_VARIABLES = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")


class LocalRun:
    """``python -m devtools.run`` in a new session, its output read from the log as it grows."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        env = {**env, "PORT": str(self.port), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.process = spawn([sys.executable, "-m", "devtools.run"], env)
        self.seen: set[int] = set()

    def banner(self, timeout: float = 120.0) -> dict[str, str]:
        """The ``key: value`` lines printed up to "Ctrl-C stops everything."."""

        def printed() -> list[str]:
            lines = self.process.log().splitlines()
            if any(line.startswith("error:") for line in lines):
                raise AssertionError("make run failed:\n" + "\n".join(lines))
            done = [i for i, line in enumerate(lines) if line.startswith("Ctrl-C")]
            return lines[: done[0]] if done else []

        lines = self.process.wait_until(printed, timeout, what="the banner of make run")
        found: dict[str, str] = {}
        for line in lines:
            key, _, value = line.partition(": ")
            found[key.strip()] = value.strip()
        return found

    def remember_processes(self) -> set[int]:
        self.seen |= self.process.descendants()
        return self.seen

    def interrupt(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60.0) -> int:
        """Ctrl-C on a terminal signals the whole foreground group; SIGTERM (a supervisor) just the process."""
        self.process.send(sig, group=sig == signal.SIGINT)
        return self.process.process.wait(timeout=timeout)


@pytest.fixture
def local_run() -> Iterator[Any]:
    started: list[LocalRun] = []

    def start(env: dict[str, str]) -> LocalRun:
        started.append(LocalRun(env))
        return started[-1]

    yield start
    for each in started:
        if each.process.running():
            each.process.kill_tree(each.seen)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EMULATOR_VARIABLES and k != "NOTIFICATIONS_BACKEND"}
    return {**env, "JWT_SECRET": SECRET, **extra}


def read_stream_until(stream: Iterator[str], event: str) -> list[str]:
    lines = []
    for line in stream:
        lines.append(line)
        if line == f"event: {event}":
            return lines
    raise AssertionError(f"stream ended before {event}: {lines}")


def check_demo_and_stream(banner: dict[str, str], publish: Any) -> None:
    url, token = banner["demo URL"], banner["token"]
    user = jwt.decode(token, SECRET, algorithms=["HS256"])["sub"]  # JWT_SECRET is honoured
    base = url.split("/demo", 1)[0]
    with httpx.Client(timeout=20) as http:
        page = http.get(url)
        assert page.status_code == 200 and 'data-testid="notification-bell"' in page.text
        assert http.get(f"{base}/api/v1/notifications/client.js").status_code == 200
        with http.stream("GET", f"{base}/api/v1/notifications/stream", params={"token": token}) as response:
            assert response.status_code == 200
            stream = response.iter_lines()
            read_stream_until(stream, "connection.established")
            publish(http, base, token, user)
            lines = read_stream_until(stream, "notification")
    assert any(line.startswith("id: ") for line in lines), lines


def assert_everything_stopped(run_: LocalRun, seen: set[int]) -> None:
    assert seen, "make run started no processes?"
    wait_for(lambda: not [pid for pid in seen if alive(pid)], 15, what="every child of make run to exit")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_run_with_embedded_backends(local_run: Any, sig: signal.Signals) -> None:
    project = f"run-{uuid.uuid4().hex[:6]}"
    started = local_run(clean_env(NOTIFICATIONS_BACKEND="memory", GOOGLE_CLOUD_PROJECT=project))
    banner = started.banner()
    assert "embedded in-memory" in banner["backends"]

    def publish(http: httpx.Client, base: str, token: str, user: str) -> None:
        answer = http.post(
            f"{base}/demo/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"event_type": "content_generation.completed", "title": "Ready", "message": "m"},
        )
        assert answer.status_code == 200 and answer.json()["via"] == "inline ingest"

    check_demo_and_stream(banner, publish)
    seen = started.remember_processes()
    assert started.interrupt(sig) == 0
    assert_everything_stopped(started, seen)
    assert "stopping" in started.process.log()


def test_make_run_uses_the_emulators_named_in_the_environment(local_run: Any, emulators_session: EmulatorPair) -> None:
    env = {**clean_env(), **emulators_session.env()}
    started = local_run(env)
    banner = started.banner()
    assert "from PUBSUB_EMULATOR_HOST" in banner["backends"]
    assert emulators_session.pubsub.address in banner["backends"]

    def publish(http: httpx.Client, base: str, token: str, user: str) -> None:
        # The worker path: the content topic on the emulator -> push -> ingest function -> stream.
        publish_event(
            emulators_session.project,
            "content-generation-events",
            {"event_type": "content_generation.completed", "user_id": user, "title": "Ready", "message": "m"},
        )

    check_demo_and_stream(banner, publish)
    seen = started.remember_processes()
    assert started.interrupt() == 0
    assert_everything_stopped(started, seen)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        with pytest.raises(gexc.NotFound):
            subscriber.get_subscription(
                subscription=subscriber.subscription_path(emulators_session.project, run.PUSH_SUBSCRIPTION)
            )
    finally:
        subscriber.close()


@pytest.mark.slow
def test_make_run_starts_and_stops_its_own_emulators(local_run: Any, emulators_installed: None) -> None:
    started = local_run(clean_env(GOOGLE_CLOUD_PROJECT="run-own-emulators"))
    banner = started.banner(timeout=180)
    assert "pubsub emulator started" in banner["backends"]
    assert "firestore emulator started" in banner["backends"]
    assert "GOOGLE_CLOUD_PROJECT=run-own-emulators" in banner["publish as a worker"]

    def publish(http: httpx.Client, base: str, token: str, user: str) -> None:
        answer = http.post(
            f"{base}/demo/publish",
            headers={"Authorization": f"Bearer {token}"},
            json={"event_type": "system.update", "title": "Hello", "message": "m"},
        )
        assert answer.status_code == 200, answer.text

    check_demo_and_stream(banner, publish)
    seen = started.remember_processes()
    assert len(seen) >= 4, "two emulators, the ingest function and the stream service"
    assert started.interrupt() == 0
    assert_everything_stopped(started, seen)


def test_choose_backends_falls_back_to_memory_without_emulators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulators, "available", lambda kind: False)
    chosen = run.choose_backends({}, "p")
    assert chosen.memory and chosen.env == {"NOTIFICATIONS_BACKEND": "memory"}
    assert "no Pub/Sub and Firestore emulators installed" in chosen.description
    with pytest.raises(run.RunError, match="FIRESTORE_EMULATOR_HOST is not set"):
        run.choose_backends({"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}, "p")


def test_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(run.RunError, match=f"port {port} is in use"):
            run.run(port, "u", threading.Event())
