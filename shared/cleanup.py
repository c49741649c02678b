"""The cleanup function's work (SPEC section 6): what is stale, expired or orphaned goes.

One run does, in this order, as much as its time budget allows:

1. ``stream_instances`` whose ``heartbeat_at`` is older than SSE_CONNECTION_TIMEOUT: first
   their entries in ``connections/{user_id}``, then the instance document, then the
   Pub/Sub subscription it names. The instance document is the work item: it is
   deleted only once its connections are gone, so a run that stops half way leaves
   it for the next run to finish.
2. ``connections`` documents untouched for longer than the timeout: entries whose
   instance is stale, or missing and opened longer than the timeout ago.
3. ``stream-instance-*`` subscriptions of NOTIFICATIONS_TOPIC whose instance
   document is missing, once they have been seen missing for longer than the
   timeout (see ``shared.cleanup_registry`` for why and how).
4. Notifications and idempotency keys whose ``expire_at`` has passed (the TTL
   policy does the bulk; this is the backstop).

Safe to run concurrently: connection entries change in transactions, documents
are deleted with preconditions (exists / unchanged since read) in non-atomic
batches, so a write another run already made fails alone and is not counted,
and deleting a subscription that is already gone is not an error.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.backend_errors import unavailable_on_error
from shared.config import Settings
from shared.errors import BackendUnavailable, NotificationError

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_SECONDS = 50.0
# The function is deployed with --timeout=300; one backend call may overrun the
# budget by its own deadline, so keep the cap well under the function's timeout.
MAX_BUDGET_SECONDS = 240.0
# BatchWrite accepts 500 writes per request; keep headroom.
BATCH_SIZE = 400

COUNTERS = ("instances", "connections", "notifications", "event_keys", "subscriptions")


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


def parse_budget(raw: str | None) -> float:
    """The budget of ``?budget_seconds=``: default when absent, capped, refused when not a number >= 0."""
    if raw is None or not raw.strip():
        return DEFAULT_BUDGET_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"budget_seconds must be a number of seconds, got {raw[:40]!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"budget_seconds must be a finite number >= 0, got {raw[:40]!r}")
    return min(value, MAX_BUDGET_SECONDS)


def run_cleanup(
    firestore_client: Any,
    subscriber: Any,
    settings: Settings,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    *,
    now: datetime | None = None,
) -> CleanupReport:
    """Do one bounded run; ``complete`` says whether every pass finished.

    Raises BackendUnavailable when Firestore or Pub/Sub fails; what was removed
    before that stays removed (every step is idempotent).
    """
    from shared import cleanup_expiry, cleanup_registry

    budget = Budget(budget_seconds)
    report = CleanupReport()
    ctx = CleanupContext(firestore_client, subscriber, settings, now or datetime.now(UTC), budget, report)
    # Cheap, bounded passes first: a large backlog of expired notifications
    # (a TTL policy not active yet) must not starve the registry's cleanup.
    passes = (
        ("stale instances", cleanup_registry.remove_stale_instances),
        ("idle connections", cleanup_registry.remove_orphan_connections),
        ("orphan subscriptions", cleanup_registry.remove_orphan_subscriptions),
        ("expired notifications", cleanup_expiry.remove_expired),
    )
    try:
        for name, step in passes:
            budget.check()
            step(ctx)
            logger.debug("cleanup pass done", extra={"cleanup_pass": name})
        report.complete = True
    except BudgetSpent:
        logger.info("cleanup stopped at its time budget; the rest waits for the next run")
    finally:
        report.elapsed_seconds = budget.elapsed()
    return report


_clients: tuple[Any, Any] | None = None


def get_clients(settings: Settings) -> tuple[Any, Any]:
    """Firestore and Pub/Sub subscriber clients, made once per process (warm instances reuse them)."""
    global _clients
    if _clients is None:
        from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

        _clients = (firestore.Client(project=settings.project_id), pubsub_v1.SubscriberClient())
    return _clients


def respond(budget_raw: str | None, settings: Settings) -> tuple[int, dict[str, Any]]:
    """The HTTP answer of one call: status and JSON body."""
    try:
        budget = parse_budget(budget_raw)
    except ValueError as exc:
        return 400, {"error": {"code": "invalid_budget", "message": str(exc)}}
    started = time.monotonic()
    try:
        firestore_client, subscriber = get_clients(settings)
        report = run_cleanup(firestore_client, subscriber, settings, budget)
    except BackendUnavailable as exc:
        logger.error("cleanup failed: backend unavailable", extra={"error": str(exc)})
        return 503, {
            "error": {"code": "backend_unavailable", "message": "Firestore or Pub/Sub is unavailable; retry later"},
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
    except Exception:  # the caller gets JSON whatever failed; the stack goes to the log
        logger.exception("cleanup failed unexpectedly")
        return 500, {
            "error": {"code": "internal", "message": "cleanup failed; see the function's logs"},
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
    body = report.to_dict()
    logger.info("cleanup run finished", extra={"cleanup": body})
    return 200, body
