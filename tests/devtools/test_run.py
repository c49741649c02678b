"""``make run`` (devtools/run.py) as a person uses it: start it, open what it prints, press Ctrl-C.

Each case starts ``python -m devtools.run`` in its own process group, reads the
demo URL and token it prints, checks the URL answers and the token opens a
stream that receives a published event, then sends SIGINT to the group (what a
terminal's Ctrl-C does) and checks that every process it started is gone.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from devtools import emulators, run
from devtools.cli import publish_event
from devtools.emulators import free_port
from tests.conftest import ROOT, EmulatorPair
from tests.support.waiting import wait_for

SECRET = "make-run-test-secret-" + "x" * 20
EMULATOR_VARIABLES = ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children[parent].append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children[todo.pop()]:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping is left


class LocalRun:
    """``python -m devtools.run`` in a new session, with its output read line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.run"],
            cwd=ROOT,
            env={**env, "PORT": str(self.port), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.seen: set[int] = set()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def banner(self, timeout: float = 120.0) -> dict[str, str]:
        """The ``key: value`` lines printed up to "Ctrl-C stops everything."."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no banner within {timeout} s:\n" + "\n".join(self.output)) from None
            self.output.append(line)
            if line.startswith("Ctrl-C"):
                return found
            if line.startswith("error:"):
                raise AssertionError("make run failed:\n" + "\n".join(self.output))
            key, _, value = line.partition(": ")
            found[key.strip()] = value.strip()

    def remember_processes(self) -> set[int]:
        self.seen |= descendants(self.process.pid)
        return self.seen

    def interrupt(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60.0) -> int:
        """Ctrl-C on a terminal signals the whole foreground group; SIGTERM (a supervisor) just the process."""
        if sig == signal.SIGINT:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        for pid in self.remember_processes() | {self.process.pid}:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait(timeout=10)


@pytest.fixture
def local_run() -> Iterator[Any]:
    started: list[LocalRun] = []

    def start(env: dict[str, str]) -> LocalRun:
        started.append(LocalRun(env))
        return started[-1]

    yield start
    for each in started:
        if each.process.poll() is None:
            each.kill()
        each.reader.join(timeout=10)
        if each.process.stdout is not None:
            each.process.stdout.close()


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
    wait_for(lambda: not [pid for pid in seen if running(pid)], 15, what="every child of make run to exit")


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
    assert "stopping" in "\n".join(started.output + list(started.lines.queue))


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
def test_make_run_starts_and_stops_its_own_emulators(local_run: Any) -> None:
    if not (emulators.available("pubsub") and emulators.available("firestore")):
        message = "emulators not installed: install gcloud's or set PUBSUB_EMULATOR_JAR and FIRESTORE_EMULATOR_JAR"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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
