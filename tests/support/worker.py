"""A content-generation worker for fault tests: it publishes until Pub/Sub takes each event."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from google.cloud import pubsub_v1

from tests.support.events import valid_event


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
