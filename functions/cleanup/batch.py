"""Batched, non-atomic Firestore writes for cleanup: each write succeeds or fails alone.

A plain WriteBatch is atomic: one failed precondition (a document another
cleanup run deleted a moment ago) would fail the other 399 deletes with it.
BatchWrite applies each write independently and reports a status per write, so
a cleanup run counts only what it removed itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from google.api_core.retry import Retry, if_transient_error
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from functions.cleanup.context import BATCH_SIZE, CleanupContext, backend

logger = logging.getLogger(__name__)

_OK = 0
# NOT_FOUND (exists precondition) and FAILED_PRECONDITION (changed since read):
# another run or the owner got there first; not an error.
_LOST_RACE = {5, 9}


def _retry(ctx: CleanupContext) -> Retry:
    return Retry(predicate=if_transient_error, initial=0.1, maximum=1.0, timeout=ctx.timeout())


def read_options(ctx: CleanupContext) -> dict[str, Any]:
    """retry/timeout keyword arguments for one read, bounded by the run's budget."""
    return {"retry": _retry(ctx), "timeout": ctx.timeout()}


def delete_all(ctx: CleanupContext, items: Sequence[tuple[Any, Any]], what: str) -> list[bool]:
    """Delete each (reference, write option or None); returns which deletes this call made."""
    results: list[bool] = []
    for start in range(0, len(items), BATCH_SIZE):
        chunk = items[start : start + BATCH_SIZE]
        batch = BulkWriteBatch(ctx.firestore)
        for ref, option in chunk:
            batch.delete(ref, option=option)
        with backend(what):
            response = batch.commit(retry=_retry(ctx), timeout=ctx.timeout())
        results.extend(_statuses(response, len(chunk), what))
    return results


def create_all(ctx: CleanupContext, items: Sequence[tuple[Any, dict[str, Any]]], what: str) -> list[bool]:
    """Create each (reference, data) unless it exists; returns which this call created."""
    results: list[bool] = []
    for start in range(0, len(items), BATCH_SIZE):
        chunk = items[start : start + BATCH_SIZE]
        batch = BulkWriteBatch(ctx.firestore)
        for ref, data in chunk:
            batch.create(ref, data)
        with backend(what):
            response = batch.commit(retry=_retry(ctx), timeout=ctx.timeout())
        results.extend(_statuses(response, len(chunk), what, lost_race={6, 5, 9}))
    return results


def _statuses(response: Any, expected: int, what: str, lost_race: set[int] = _LOST_RACE) -> list[bool]:
    codes = [int(status.code) for status in response.status]
    if len(codes) != expected:
        # Some Firestore versions leave status empty when every write succeeded.
        codes = [_OK] * expected if not codes else (codes + [_OK] * expected)[:expected]
    unexpected = [code for code in codes if code != _OK and code not in lost_race]
    if unexpected:
        # Transient per-write failures: left for the next run, not worth failing this one.
        logger.warning("some cleanup writes failed", extra={"step": what, "codes": sorted(set(unexpected))})
    return [code == _OK for code in codes]
