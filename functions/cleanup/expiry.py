"""Expired notifications and idempotency keys: the backstop of the TTL policy on ``expire_at``.

Firestore's TTL deletes expired documents, typically within a day of expiry;
this pass removes whatever it has not yet, page by page, oldest query first.
The collection-group queries need the single-field ``expire_at`` index with
collection-group scope (``fieldOverrides`` in firestore.indexes.json).
"""

from __future__ import annotations

from google.cloud.firestore_v1.base_query import FieldFilter

from functions.cleanup.batch import delete_all, read_options
from functions.cleanup.context import BATCH_SIZE, CleanupContext, backend

# Collection group -> counter of the report. Notifications first: a key without
# its notification is harmless, the reverse would let a late redelivery of an
# expired event store it again.
GROUPS = (("notifications", "notifications"), ("event_keys", "event_keys"))


def remove_expired(ctx: CleanupContext) -> None:
    for group, counter in GROUPS:
        while True:
            ctx.budget.check()
            query = (
                ctx.firestore.collection_group(group)
                .where(filter=FieldFilter("expire_at", "<", ctx.now))
                .limit(BATCH_SIZE)
                .select([])
            )
            with backend(f"query of expired {group}"):
                refs = [snapshot.reference for snapshot in query.stream(**read_options(ctx))]
            if not refs:
                break
            option = ctx.firestore.write_option(exists=True)
            deleted = sum(delete_all(ctx, [(ref, option) for ref in refs], f"delete of expired {group}"))
            ctx.report.add(counter, deleted)
            # A short page is the last one; a page another run emptied first is left to that run.
            if len(refs) < BATCH_SIZE or deleted == 0:
                break
