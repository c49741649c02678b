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
   timeout (see ``functions.cleanup.registry_pass`` for why and how).
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
from datetime import UTC, datetime
from typing import Any

from functions.cleanup import expiry, registry_pass
from functions.cleanup.context import MAX_BUDGET_SECONDS, Budget, BudgetSpent, CleanupContext, CleanupReport
from shared.config import Settings
from shared.errors import BackendMisconfigured, BackendUnavailable

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_SECONDS = 50.0


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
    publisher: Any = None,
) -> CleanupReport:
    """Do one bounded run; ``complete`` says whether every pass finished.

    Raises BackendUnavailable when Firestore or Pub/Sub fails; what was removed
    before that stays removed (every step is idempotent). ``publisher``
    (a Pub/Sub PublisherClient, for the instances' inbox topics) defaults to the process's.
    """
    budget = Budget(budget_seconds)
    report = CleanupReport()
    publisher = publisher if publisher is not None else _publisher()
    ctx = CleanupContext(firestore_client, subscriber, publisher, settings, now or datetime.now(UTC), budget, report)
    # Cheap, bounded passes first: a large backlog of expired notifications
    # (a TTL policy not active yet) must not starve the registry's cleanup.
    passes = (
        ("stale instances", registry_pass.remove_stale_instances),
        ("idle connections", registry_pass.remove_orphan_connections),
        ("orphan subscriptions", registry_pass.remove_orphan_subscriptions),
        ("expired notifications", expiry.remove_expired),
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
_publisher_client: Any = None


def _publisher() -> Any:
    global _publisher_client
    if _publisher_client is None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        _publisher_client = pubsub_v1.PublisherClient()
    return _publisher_client


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
    except BackendMisconfigured as exc:
        # Logged at ERROR where it was classified, naming what is missing; no retry will fix it.
        return 500, {
            "error": {"code": "backend_misconfigured", "message": str(exc)[:500]},
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
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
