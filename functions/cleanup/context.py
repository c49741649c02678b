"""What every cleanup pass shares: the run's budget, its report, its clients and settings.

The passes (``batch``, ``expiry``, ``registry_pass``) import this module and
nothing of each other's callers; ``run`` orders them. No cycle.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.backends.google_errors import unavailable_on_error
from shared.config import Settings
from shared.errors import NotificationError

logger = logging.getLogger(__name__)

# The function is deployed with --timeout=300; one backend call may overrun the
# budget by its own deadline, so keep the cap well under the function's timeout.
MAX_BUDGET_SECONDS = 240.0
# BatchWrite accepts 500 writes per request; keep headroom.
BATCH_SIZE = 400

COUNTERS = ("instances", "connections", "notifications", "event_keys", "subscriptions", "topics")


class BudgetSpent(NotificationError):
    """The run's time budget is used up; what is left waits for the next run."""


class Budget:
    """A deadline on the monotonic clock, checked before every unit of work."""

    def __init__(self, seconds: float, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + max(0.0, seconds)

    def remaining(self) -> float:
        return float(self.deadline - self._clock())

    def elapsed(self) -> float:
        return float(self._clock() - self.started)

    def check(self) -> None:
        """Raise BudgetSpent when no time is left for another step."""
        if self.remaining() <= 0:
            raise BudgetSpent("time budget spent")

    def call_timeout(self, backend_timeout: float) -> float:
        """Deadline of one backend call: the backend's, but never far beyond the budget."""
        return max(1.0, min(backend_timeout, self.remaining()))


@dataclass
class CleanupReport:
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    complete: bool = False
    elapsed_seconds: float = 0.0

    def add(self, counter: str, n: int) -> None:
        self.removed[counter] += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": dict(self.removed),
            "complete": self.complete,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


@dataclass(frozen=True)
class CleanupContext:
    """What every pass needs: clients, settings, the run's clock and budget."""

    firestore: Any  # google.cloud.firestore.Client
    subscriber: Any  # google.cloud.pubsub_v1.SubscriberClient
    publisher: Any  # google.cloud.pubsub_v1.PublisherClient (stream instances' inbox topics)
    settings: Settings
    now: datetime
    budget: Budget
    report: CleanupReport

    @property
    def stale_before(self) -> datetime:
        return self.now - timedelta(seconds=self.settings.sse_connection_timeout)

    @property
    def topic_path(self) -> str:
        return f"projects/{self.settings.project_id}/topics/{self.settings.notifications_topic}"

    def timeout(self) -> float:
        return self.budget.call_timeout(self.settings.backend_timeout_seconds)


def backend(what: str) -> AbstractContextManager[None]:
    """Translate client errors into BackendUnavailable (503), naming the step."""
    return unavailable_on_error(what)
