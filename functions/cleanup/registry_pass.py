"""The connection registry's leftovers: stale instances, their connections, orphan subscriptions.

The registry's layout, reads and pruning transaction are ``shared.backends.firestore_registry``'s;
this module decides what to prune within the run's budget.

An instance is *stale* when its ``heartbeat_at`` is older than SSE_CONNECTION_TIMEOUT
and *missing* when it has no document.

Orphan subscriptions. A ``stream-instance-*`` subscription whose instance
document is missing may belong to an instance that is starting and has not
written its document yet, so "missing now" is not enough to delete it. Pub/Sub
tells nothing about a subscription's age (no creation time; the emulator does not
even keep label updates), so cleanup remembers when it first saw one missing, in
``cleanup_orphan_subscriptions/{subscription_id}`` (``missing_since``,
``subscription``, ``expire_at``), and deletes the subscription only when a later
run finds it still missing more than the timeout after that sighting. The
sighting is dropped as soon as the instance document shows up or the
subscription is gone. When cleanup itself deletes a stale instance but then
fails to delete its subscription, it records the sighting as already old, so
the next run removes it without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc

from functions.cleanup.batch import create_all, delete_all, read_options
from functions.cleanup.context import BudgetSpent, CleanupContext, backend
from shared.backends import firestore_registry as registry
from shared.backends.firestore_registry import MISSING
from shared.backends.pubsub_channel import (
    broadcast_subscription_id,
    instance_of,
    instance_subscription_id,
    instance_topic_id,
)

logger = logging.getLogger(__name__)

SIGHTINGS = "cleanup_orphan_subscriptions"
_PAGE = 100
# Pass 2 looks at no more idle connection documents than this per run.
_MAX_IDLE_SCAN = 2000
_SIGHTING_RETENTION = timedelta(days=7)
_LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


# --- pass 1: stale instances ------------------------------------------------


def remove_stale_instances(ctx: CleanupContext) -> None:
    while True:
        ctx.budget.check()
        query = registry.stale_instances_query(ctx.firestore, ctx.stale_before, _PAGE)
        with backend("query of stale instances"):
            stale = list(query.stream(**read_options(ctx)))
        if not stale:
            return
        # Concurrent runs see the same page: a random order has them mostly work on
        # different instances instead of aborting each other's transactions.
        _shuffle(stale)
        cleared: list[Any] = []
        spent: BudgetSpent | None = None
        try:
            for snapshot in stale:
                ctx.budget.check()
                if _clear_instance_connections(ctx, snapshot.id):
                    cleared.append(snapshot)
        except BudgetSpent as exc:
            spent = exc  # still delete the instances already cleared: that work is done
        deleted = _delete_instances(ctx, cleared)
        if spent is not None:
            raise spent
        if len(stale) < _PAGE or deleted == 0:
            return


def _clear_instance_connections(ctx: CleanupContext, instance_id: str) -> bool:
    """Remove the instance's entries from every connections document; False if some remain."""
    while True:
        ctx.budget.check()
        query = registry.connections_of_instance_query(ctx.firestore, instance_id, _PAGE)
        with backend("query of an instance's connections"):
            refs = [snapshot.reference for snapshot in query.stream(**read_options(ctx))]
        if not refs:
            return True
        _shuffle(refs)
        changed = 0
        for ref in refs:
            ctx.budget.check()
            changed += prune_connections(ctx, ref)[1]
        if changed == 0:
            # The instance is no longer stale (it came back): leave it and its entries.
            return False


def _shuffle(items: list[Any]) -> None:
    random.shuffle(items)  # work order, not security


def _delete_instances(ctx: CleanupContext, snapshots: list[Any]) -> int:
    if not snapshots:
        return 0
    # Only if unchanged since read: an instance that heartbeated meanwhile stays.
    items = [(s.reference, ctx.firestore.write_option(last_update_time=s.update_time)) for s in snapshots]
    results = delete_all(ctx, items, "delete of stale instances")
    gone = [snapshot.id for snapshot, ok in zip(snapshots, results, strict=True) if ok]
    deleted = len(gone)
    ctx.report.add("instances", deleted)
    for instance_id in gone:
        # Not cut short by the budget: with its document gone, an instance's
        # channel resources would otherwise wait for the orphan pass's grace period.
        delete_channel_resources(ctx, instance_id, instance_resources(ctx, instance_id), check_budget=False)
    if deleted:
        logger.info("removed stale stream instances", extra={"instances": deleted})
    return deleted


def instance_resources(ctx: CleanupContext, instance_id: str) -> list[str]:
    """The paths of an instance's channel resources: its two subscriptions, then its inbox topic."""
    project = ctx.settings.project_id
    return [
        f"projects/{project}/subscriptions/{instance_subscription_id(instance_id)}",
        f"projects/{project}/subscriptions/{broadcast_subscription_id(instance_id)}",
        f"projects/{project}/topics/{instance_topic_id(instance_id)}",
    ]


def delete_channel_resources(
    ctx: CleanupContext, instance_id: str, paths: list[str], *, check_budget: bool = True
) -> None:
    """Delete an instance's subscriptions and inbox topic; what fails is left for the next run without grace."""
    failed = False
    for path in paths:
        if check_budget:
            ctx.budget.check()
        is_topic = "/topics/" in path
        try:
            if is_topic:
                ctx.publisher.delete_topic(request={"topic": path}, timeout=ctx.timeout())
            else:
                ctx.subscriber.delete_subscription(request={"subscription": path}, timeout=ctx.timeout())
        except gexc.NotFound:
            continue
        except gexc.GoogleAPIError as exc:
            failed = True
            logger.warning("could not delete a stream-instance resource", extra={"resource": path, "error": repr(exc)})
            continue
        ctx.report.add("topics" if is_topic else "subscriptions", 1)
    if failed:
        # Its instance document is gone now: make the orphan pass remove the rest without the grace period.
        ref = ctx.firestore.collection(SIGHTINGS).document(instance_subscription_id(instance_id))
        with backend("record of undeleted channel resources"):
            ref.set(_sighting(ctx, instance_id, _LONG_AGO), timeout=ctx.timeout())


# --- connections: one transaction per document ---------------------------------


def instance_states(ctx: CleanupContext, instance_ids: Iterable[str]) -> dict[str, str]:
    return registry.instance_states(ctx.firestore, instance_ids, ctx.stale_before, **read_options(ctx))


_CONTENDED_ROUNDS = 6


def prune_connections(ctx: CleanupContext, ref: Any) -> tuple[int, bool]:
    """Prune one ``connections/{user}`` document (see ``firestore_registry.prune_connections``)."""
    for attempt in range(_CONTENDED_ROUNDS):
        try:
            with backend("connection pruning"):
                removed, changed = registry.prune_connections(ctx.firestore, ref, ctx.stale_before)
            break
        except ValueError:
            # The client gives up on a transaction aborted 5 times in a row (another
            # cleanup run or a connecting instance holds the document). Back off with
            # jitter so the two stop colliding, within the run's budget.
            ctx.budget.check()
            if attempt == _CONTENDED_ROUNDS - 1:
                raise BudgetSpent(f"connections/{ref.id} stayed contended; left for the next run") from None
            time.sleep(min(ctx.budget.remaining(), random.uniform(0.05, 0.25) * (attempt + 1)))  # noqa: S311
    ctx.report.add("connections", int(removed))
    return int(removed), bool(changed)


# --- pass 2: idle connection documents --------------------------------------------


def remove_orphan_connections(ctx: CleanupContext) -> None:
    """Entries left by instances that are gone without cleanup seeing them stale.

    Only documents not written for longer than the timeout can hold such
    entries; each page is judged with one read of the instances it names, and
    only documents with something to remove are touched (in a transaction).
    """
    cursor = None
    scanned = 0
    while scanned < _MAX_IDLE_SCAN:
        ctx.budget.check()
        query = registry.idle_connections_query(ctx.firestore, ctx.stale_before, _PAGE)
        if cursor is not None:
            query = query.start_after(cursor)
        with backend("query of idle connections"):
            page = list(query.stream(**read_options(ctx)))
            if not page:
                return
            lives = {s.id: registry.live_entries(s.to_dict() or {}) for s in page}
            named = {e["instance"] for live in lives.values() for e in live.values() if registry.has_instance(e)}
            states = instance_states(ctx, named)
        for snapshot in page:
            live = lives[snapshot.id]
            if not live or registry.entries_to_remove(live, states, ctx.stale_before):
                ctx.budget.check()
                prune_connections(ctx, snapshot.reference)
        scanned += len(page)
        cursor = page[-1]
        if len(page) < _PAGE:
            return


# --- pass 3: orphan subscriptions ----------------------------------------------------


def _sighting(ctx: CleanupContext, instance_id: str, missing_since: datetime) -> dict[str, Any]:
    return {"instance": instance_id, "missing_since": missing_since, "expire_at": ctx.now + _SIGHTING_RETENTION}


def remove_orphan_subscriptions(ctx: CleanupContext) -> None:
    """Subscriptions and inbox topics of instances that have no document (see the module's docstring)."""
    ctx.budget.check()
    project = f"projects/{ctx.settings.project_id}"
    by_instance: dict[str, list[str]] = {}
    with backend("list of subscriptions and topics"):
        subscriptions = ctx.subscriber.list_subscriptions(request={"project": project}, timeout=ctx.timeout())
        topics = ctx.publisher.list_topics(request={"project": project}, timeout=ctx.timeout())
        for path in [s.name for s in subscriptions] + [t.name for t in topics]:
            instance_id = instance_of(path.rsplit("/", 1)[-1])
            if instance_id is not None:
                by_instance.setdefault(instance_id, []).append(path)
    instance_ids = sorted(by_instance)
    for start in range(0, len(instance_ids), _PAGE):
        ctx.budget.check()
        _judge_instances(ctx, {i: by_instance[i] for i in instance_ids[start : start + _PAGE]})
    ctx.budget.check()
    _forget_sightings(ctx, {instance_subscription_id(i) for i in instance_ids})


def _judge_instances(ctx: CleanupContext, by_instance: dict[str, list[str]]) -> None:
    with backend("read of instances and sightings"):
        states = instance_states(ctx, by_instance)
        sighting_refs = {
            i: ctx.firestore.collection(SIGHTINGS).document(instance_subscription_id(i)) for i in by_instance
        }
        sightings = {
            s.id: (s.to_dict() or {})
            for s in ctx.firestore.get_all(list(sighting_refs.values()), **read_options(ctx))
            if s.exists
        }
    to_record: list[tuple[Any, dict[str, Any]]] = []
    to_forget: list[Any] = []
    for instance_id, paths in by_instance.items():
        ref = sighting_refs[instance_id]
        seen = sightings.get(ref.id)
        state = states[instance_id]
        if state != MISSING:
            # Present: alive, or stale and pass 1's to remove with its connections.
            if seen is not None:
                to_forget.append(ref)
            continue
        if seen is None:
            to_record.append((ref, _sighting(ctx, instance_id, ctx.now)))
            continue
        since = seen.get("missing_since")
        if isinstance(since, datetime) and since < ctx.stale_before:
            # Subscriptions before the topic, as the instance itself deletes them.
            delete_channel_resources(ctx, instance_id, sorted(paths, key=lambda p: "/topics/" in p))
            logger.info("removed an orphan stream instance's channel resources", extra={"instance": instance_id})
            to_forget.append(ref)
    if to_record:
        create_all(ctx, to_record, "record of orphan subscriptions")
    if to_forget:
        delete_all(ctx, [(ref, None) for ref in to_forget], "delete of orphan sightings")


def _forget_sightings(ctx: CleanupContext, listed: set[str]) -> None:
    """Drop sightings of subscriptions that no longer exist (Pub/Sub expired them, or an instance deleted its own)."""
    with backend("read of orphan sightings"):
        refs = [
            s.reference
            for s in ctx.firestore.collection(SIGHTINGS).select([]).limit(500).stream(**read_options(ctx))
            if s.id not in listed
        ]
    if refs:
        delete_all(ctx, [(ref, None) for ref in refs], "delete of old orphan sightings")
