"""Fault tests: the emulator fixtures, private emulators, a retrying worker, stream bookkeeping."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.cloud import pubsub_v1

from devtools import emulators as emulator_tools
from tests.conftest import PROJECT
from tests.support.events import valid_event
from tests.support.sse import EventStream
from tests.support.waiting import wait_for


@pytest.fixture
def private_pubsub() -> Iterator[emulator_tools.Emulator]:
    """A Pub/Sub emulator of this test's own: killing it disturbs no other test."""
    emulator = emulator_tools.start("pubsub", PROJECT)
    yield emulator
    emulator.stop()


@pytest.fixture
def private_firestore() -> Iterator[emulator_tools.Emulator]:
    emulator = emulator_tools.start("firestore", PROJECT)
    yield emulator
    emulator.stop()


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RetryingWorker:
    """A content-generation worker whose publisher retries until Pub/Sub takes the event.

    Each attempt is one unary Publish call with a short deadline and no client
    retry, so an outage shows up as failed attempts (counted) rather than a hang.
    The worker publishes in order: an event waits until the one before it is in.
    """

    def __init__(self, project: str, topic: str) -> None:
        # The client reads PUBSUB_EMULATOR_HOST when it is built: build it while the variable is set.
        self._topic = f"projects/{project}/topics/{topic}"
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held = threading.Event()
        self._attempt = threading.Lock()  # held during one publish attempt
        self.published: list[dict[str, Any]] = []
        self.failed_attempts = 0
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._client = pubsub_v1.PublisherClient()
        self._thread.start()

    def submit(self, user: str, label: str) -> dict[str, Any]:
        event = valid_event(user, title=label, event_id=f"evt-{uuid.uuid4().hex}")
        with self._lock:
            self._pending.append(event)
        self._wake.set()
        return event

    def hold(self) -> None:
        """Stop attempting (the outage continues) until ``release``; waits for an attempt in flight."""
        self._held.set()
        with self._attempt:
            pass

    def release(self) -> None:
        self._held.clear()
        self._wake.set()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            while not self._stop.is_set():
                with self._lock:
                    if not self._pending:
                        break
                    event = self._pending[0]
                with self._attempt:
                    if self._held.is_set():
                        failed = None
                    else:
                        try:
                            self._client.api.publish(
                                request={"topic": self._topic, "messages": [{"data": json.dumps(event).encode()}]},
                                retry=None,
                                timeout=2.0,
                            )
                            failed = False
                        except Exception:  # any failure is retried, as a worker's publisher would
                            self.failed_attempts += 1
                            failed = True
                if failed is None:
                    self._stop.wait(0.1)
                    continue
                if failed:
                    self._stop.wait(0.5)
                    continue
                with self._lock:
                    self._pending.pop(0)
                    self.published.append(event)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        self._client.stop()


@dataclass
class Tally:
    """One client of one user: its current stream and the ones it had before reconnecting."""

    user: str
    stream: EventStream
    history: list[EventStream] = field(default_factory=list)

    def all_streams(self) -> list[EventStream]:
        return [*self.history, self.stream]

    def notifications(self) -> list[dict[str, Any]]:
        return [e.json() for s in self.all_streams() for e in s.of_type("notification")]

    def titles(self) -> list[str]:
        return [n["title"] for n in self.notifications()]


def assert_each_event_once_per_stream(tallies: list[Tally], expected: dict[str, list[str]], timeout: float) -> None:
    """Every stream of each user gets that user's events, each exactly once, and nobody else's."""
    for tally in tallies:

        def arrived(tally: Tally = tally) -> bool:
            return set(expected[tally.user]) <= set(tally.titles())

        wait_for(arrived, timeout, what=f"every event on {tally.user}'s stream")
    for tally in tallies:
        tally.stream.wait_event("heartbeat", timeout=10)  # a duplicate would have arrived by now
        tally.stream.wait_event("heartbeat", timeout=10)
    for tally in tallies:
        assert sorted(tally.titles()) == sorted(expected[tally.user]), "each event exactly once per stream"
        assert {n["user_id"] for n in tally.notifications()} == {tally.user}
