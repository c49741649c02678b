"""Client errors of Google Cloud turned into BackendUnavailable or BackendMisconfigured, naming the step.

One place for what counts as "the backend is unavailable" (it may work again
by itself: retry) and what counts as "the deployment is wrong" (a missing
topic, database, index or IAM binding: retrying cannot succeed), used by the
store, the connection registry, the Pub/Sub backends and the cleanup function.

A misconfiguration is logged at ERROR here, once per failed call, with
``error_kind`` ``backend_misconfigured``, the service, the step and Google's
message (which names the missing resource or permission): the log-based metric
``notifications_backend_misconfigured`` counts those lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc

from shared.errors import BackendMisconfigured, BackendUnavailable

logger = logging.getLogger(__name__)

MISCONFIGURED_KIND = "backend_misconfigured"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.GoogleAPIError,
    TimeoutError,  # also concurrent.futures' (the same class since Python 3.11)
    ConnectionError,
)
_MISCONFIGURATION_ERRORS: tuple[type[BaseException], ...] = (
    gexc.PermissionDenied,  # a missing IAM binding
    gexc.Unauthenticated,  # no or expired credentials for the service account
    gexc.NotFound,  # a missing topic, subscription or database
)
# NotFound also answers a write to one document that a concurrent request just
# deleted (Firestore: "No document to update"; emulator: "no entity to update"):
# a race that a retry settles, not a missing resource.
_DOCUMENT_RACE = ("document to update", "entity to update")


def is_misconfiguration(exc: BaseException) -> bool:
    if isinstance(exc, gexc.FailedPrecondition):
        # Firestore's "The query requires an index": a missing composite index.
        return "index" in str(exc).lower()
    if not isinstance(exc, _MISCONFIGURATION_ERRORS):
        return False
    return not (isinstance(exc, gexc.NotFound) and any(text in str(exc).lower() for text in _DOCUMENT_RACE))


def backend_error(exc: BaseException, what: str, service: str = "backend") -> BackendUnavailable:
    """The error to raise for a failed call: BackendMisconfigured (logged at ERROR) or BackendUnavailable."""
    if is_misconfiguration(exc):
        detail = str(getattr(exc, "message", "") or exc)[:500]
        logger.error(
            "%s refused %s: the deployment is missing something (%s)",
            service,
            what,
            detail,
            extra={
                "error_kind": MISCONFIGURED_KIND,
                "service": service,
                "step": what,
                "error_type": type(exc).__name__,
                "error": detail,
            },
        )
        return BackendMisconfigured(f"{service} misconfigured during {what}: {type(exc).__name__}: {detail}")
    return BackendUnavailable(f"{service} unavailable during {what}: {exc!r}")


@contextmanager
def unavailable_on_error(what: str, service: str = "backend") -> Iterator[None]:
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise backend_error(exc, what, service) from exc
