"""The connection registry on Firestore: its schema, its reads and writes, and its pruning.

The one module that knows the layout (``docs/firestore-layout.md``, "Live
connections"); the stream service records streams through ``FirestoreRegistry``
and the cleanup function prunes with the functions at the end.

- ``stream_instances/{instance_id}``: ``heartbeat_at``, ``started_at``,
  ``subscription``, ``expire_at``; written at start and once per heartbeat
  interval by its instance, deleted at clean shutdown.
- ``connections/{user_id}``: ``live`` (connection_id -> {instance, opened_at}),
  ``instances`` (the instance ids present in ``live``), ``count`` (how many
  entries ``live`` holds), ``updated_at``.

A connect is one write: it adds its entry and increments ``count``, whose new
value the write returns; at or under the limit it is admitted. Only over it
(entries of dead instances or leftovers may be in the count) does the connect
read the document, count the live entries truly and rewrite it with a write
conditioned on that read, dropping its own entry if the user is really at the
limit. A disconnect reads and rewrites the same way, so ``count`` is recomputed
from ``live`` at every disconnect and prune. It can only overstate between
them (a connect whose write failed ambiguously), which costs a read, never an
extra stream. A document written before ``count`` existed reads as holding
none: during that rollout a user could get up to ``limit`` more streams until
the old entries end.

An entry counts while its instance's heartbeat is newer than two heartbeat
intervals; the first connect of that user over the limit drops entries of dead
instances, and so does the cleanup function, so a crashed instance stops
counting without any cleanup.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from shared.backends.firestore_rpc import COMMIT_REQUEST, FirestoreRpc, rpc_for
from shared.backends.google_errors import unavailable_on_error
from shared.backends.group_call import GroupCall
from shared.errors import BackendUnavailable
from shared.registry import ConnectionRegistry

logger = logging.getLogger(__name__)

INSTANCES = "stream_instances"
CONNECTIONS = "connections"
# A stream_instances document lingers this long after its last heartbeat if the
# instance dies; a Firestore TTL policy on expire_at removes it (cleanup too).
INSTANCE_EXPIRY = timedelta(days=1)

FRESH, STALE, MISSING = "fresh", "stale", "missing"


@dataclass(frozen=True)
class _Connect:
    document: str
    connection_id: str
    now: datetime


def instance_document(heartbeat_at: datetime, started_at: datetime, subscription: str) -> dict[str, Any]:
    """``stream_instances/{id}``: what an instance writes at start and on every heartbeat."""
    return {
        "heartbeat_at": heartbeat_at,
        "started_at": started_at,
        "subscription": subscription,
        "expire_at": heartbeat_at + INSTANCE_EXPIRY,
    }


def connections_document(live: dict[str, Any], updated_at: Any) -> dict[str, Any]:
    """``connections/{user}``: the live entries, the instances they name and their count, kept in step."""
    instances = sorted({str(e["instance"]) for e in live.values() if has_instance(e)})
    return {"live": live, "instances": instances, "count": len(live), "updated_at": updated_at}


def _connect_writes(database: str, instance_id: str, connects: list[_Connect]) -> Any:
    """Connects' writes, as one raw Commit request: each entry merged into ``live``, then the transforms.

    What ``set({...}, merge=True)`` with ``ArrayUnion`` and ``Increment`` sends,
    built directly: the client's own building (its field extractor and the
    proto-plus wrappers) cost a connect about 1 ms more CPU than the call itself
    (measured one call at a time on the emulator: 2.2-2.8 ms through ``set``,
    1.6-1.7 ms this way). Each write's only transform with an integer result
    is ``count``'s: ``_new_counts`` reads them back.
    """
    request = COMMIT_REQUEST(database=database)
    for connect in connects:
        write = request.writes.add()
        write.update.name = connect.document
        entry = write.update.fields["live"].map_value.fields[connect.connection_id].map_value.fields
        entry["instance"].string_value = instance_id
        entry["opened_at"].timestamp_value.FromDatetime(connect.now)
        write.update.fields["updated_at"].timestamp_value.FromDatetime(connect.now)
        write.update_mask.field_paths.extend(
            [FieldPath("live", connect.connection_id, name).to_api_repr() for name in ("instance", "opened_at")]
            + ["updated_at"]
        )
        count = write.update_transforms.add(field_path="count")
        count.increment.integer_value = 1
        instances = write.update_transforms.add(field_path="instances")
        instances.append_missing_elements.values.add(string_value=instance_id)
    return request


def _new_counts(response: Any) -> list[int | None]:
    """The new value of each write's ``count`` increment, from a raw CommitResponse."""
    counts: list[int | None] = []
    for result in response.write_results:
        found = None
        for value in result.transform_results:
            if value.WhichOneof("value_type") == "integer_value":
                found = int(value.integer_value)
        counts.append(found)
    return counts


def live_entries(data: dict[str, Any]) -> dict[str, Any]:
    live = data.get("live")
    return live if isinstance(live, dict) else {}


def has_instance(entry: object) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("instance"), str)


# What the client's Commit retries by default, kept now that the connect's commit goes past the client.
_COMMIT_RETRY = Retry(
    predicate=if_exception_type(gexc.ResourceExhausted, gexc.ServiceUnavailable),
    initial=0.1,
    maximum=60.0,
    multiplier=1.3,
    timeout=60.0,
)
# Connects of one user contend on one document; each attempt re-reads and re-counts.
TRANSACTION_ATTEMPTS = 10


def _contended(attempt: int) -> None:
    # Jitter, so two writers that collided do not collide again at once.
    time.sleep(random.uniform(0.005, 0.03) * (attempt + 1))  # noqa: S311 - timing, not security


@contextmanager
def _backend(what: str) -> Iterator[None]:
    with unavailable_on_error(what, "Firestore"):
        try:
            yield
        except ValueError as exc:
            # The client gives up on a contended transaction with a ValueError.
            if "transaction" not in str(exc).lower():
                raise
            raise BackendUnavailable(f"Firestore transaction contended during {what}: {exc}") from exc


def _fields(snapshot: Any) -> dict[str, Any]:
    data = snapshot.to_dict() if snapshot.exists else None
    return data if isinstance(data, dict) else {}


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class FirestoreRegistry(ConnectionRegistry):
    def __init__(
        self,
        client: Any,
        instance_id: str,
        limit: int,
        heartbeat_interval: float,
        *,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(instance_id, limit, heartbeat_interval)
        self._client = client
        self._timeout = timeout
        self._commit = _COMMIT_RETRY(FirestoreRpc.commit)
        self._subscription = ""
        self._started_at: datetime | None = None
        # This instance's live connections. An entry of this instance that is not
        # here is a leftover (its release failed) and stops counting at once.
        self._local: set[str] = set()
        self._local_lock = threading.Lock()
        # Other instances' last heartbeats: instance -> (heartbeat_at, when read, monotonic).
        self._beats: dict[str, tuple[datetime | None, float]] = {}
        self._beats_lock = threading.Lock()
        # Connects of different users that wait for a commit in flight share the next one.
        self._connects: GroupCall[_Connect, int | None] = GroupCall(self._commit_connects, key=lambda c: c.document)
        # Disconnects come in storms (a network blip ends thousands of streams at once):
        # those of different users that wait for a read in flight share the next one.
        self._release_reads: GroupCall[str, Any] = GroupCall(self._read_connections)

    def _instance_ref(self, instance_id: str) -> Any:
        return self._client.collection(INSTANCES).document(instance_id)

    def _connections_ref(self, user_id: str) -> Any:
        return self._client.collection(CONNECTIONS).document(user_id)

    def start(self, subscription: str) -> None:
        self._subscription = subscription
        now = datetime.now(UTC)
        self._started_at = now
        with _backend("instance start"):
            self._instance_ref(self.instance_id).set(instance_document(now, now, subscription), timeout=self._timeout)

    def heartbeat(self) -> None:
        now = datetime.now(UTC)
        with _backend("instance heartbeat"):
            # The whole record each time: if cleanup removed it (heartbeats failed
            # for longer than SSE_CONNECTION_TIMEOUT) it comes back complete.
            self._instance_ref(self.instance_id).set(
                instance_document(now, self._started_at or now, self._subscription), timeout=self._timeout
            )

    def _alive(self, instance_ids: list[str], now: datetime) -> set[str]:
        """The instances among ``instance_ids`` whose heartbeat is newer than two intervals.

        Heartbeats are read outside the connect's write and kept for half an
        interval: a connect then costs no read of the instances in the common
        case. A kept heartbeat is the instance's real last one or older, so an
        instance is never taken for dead too early; a stopped one (record
        deleted) keeps counting for at most half an interval longer.
        """
        cutoff = now - timedelta(seconds=2 * self.heartbeat_interval)
        fresh_for = self.heartbeat_interval / 2
        clock = time.monotonic()
        with self._beats_lock:
            wanted = [
                i
                for i in instance_ids
                if i != self.instance_id and (i not in self._beats or clock - self._beats[i][1] > fresh_for)
            ]
        if wanted:
            refs = [self._instance_ref(i) for i in wanted]
            beats = dict.fromkeys(wanted)
            for snapshot in self._client.get_all(refs, field_paths=["heartbeat_at"], timeout=self._timeout):
                beats[snapshot.id] = _aware(_fields(snapshot).get("heartbeat_at"))
            with self._beats_lock:
                if len(self._beats) > 10_000:  # instances come and go; forget the long gone
                    self._beats.clear()
                self._beats.update({i: (beat, clock) for i, beat in beats.items()})
        with self._beats_lock:
            known = {i: self._beats.get(i, (None, clock))[0] for i in instance_ids}
        return {i for i, beat in known.items() if i == self.instance_id or (beat is not None and beat > cutoff)}

    def acquire(self, user_id: str, connection_id: str, abandoned: threading.Event | None = None) -> bool:
        """Add this stream's entry and count it in one write; only over the limit, count the entries truly.

        The common connect (a user under the limit) is one round trip, a
        commit that returns the new ``count``; connects of other users that
        wait meanwhile share the next commit (``GroupCall``: one write each,
        one request in all). Over the limit, ``_settle``
        reads the document and rewrites it conditioned on that read (retried
        with jitter when another connect or disconnect wrote in between).
        """
        ref = self._connections_ref(user_id)
        # Known locally before the write, so a concurrent connect of the same user
        # on this instance never mistakes the new entry for a leftover.
        with self._local_lock:
            self._local.add(connection_id)
        accepted = False
        try:
            with _backend("connect"):
                accepted = self._acquire(ref, connection_id, abandoned)
        finally:
            if not accepted:
                with self._local_lock:
                    self._local.discard(connection_id)
        return accepted

    def _acquire(self, ref: Any, connection_id: str, abandoned: threading.Event | None) -> bool:
        if abandoned is not None and abandoned.is_set():
            return False  # nobody waits for this connect any more
        now = datetime.now(UTC)
        entry = {"instance": self.instance_id, "opened_at": now}
        count = self._connects.submit(_Connect(ref._document_path, connection_id, now))
        if count is not None and count <= self.limit:
            return True
        return self._settle(ref, connection_id, entry, abandoned)

    def _commit_connects(self, connects: list[_Connect]) -> list[int | None]:
        rpc = rpc_for(self._client, self._timeout)
        return _new_counts(self._commit(rpc, _connect_writes(rpc.database, self.instance_id, connects)))

    def _settle(self, ref: Any, connection_id: str, entry: dict[str, Any], abandoned: threading.Event | None) -> bool:
        """Count the live entries of others; keep ``connection_id``'s entry if they are under the limit."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            now = datetime.now(UTC)
            snapshot = ref.get(timeout=self._timeout)
            live: dict[str, Any] = dict(_fields(snapshot).get("live") or {})
            live.pop(connection_id, None)
            instances = sorted({str(e.get("instance")) for e in live.values() if isinstance(e, dict)})
            alive = self._alive(instances, now)
            with self._local_lock:
                local = set(self._local)
            kept = {
                c: e
                for c, e in live.items()
                if isinstance(e, dict)
                and e.get("instance") in alive
                and (e.get("instance") != self.instance_id or c in local)
            }
            admitted = len(kept) < self.limit and not (abandoned is not None and abandoned.is_set())
            if admitted:
                kept[connection_id] = entry
            document = connections_document(kept, now) if kept else None
            if self._write_if_unchanged(ref, snapshot, document):
                return admitted
            _contended(attempt)
        raise BackendUnavailable(f"connections/{ref.id} stayed contended for {TRANSACTION_ATTEMPTS} attempts")

    def _write_if_unchanged(self, ref: Any, snapshot: Any, document: dict[str, Any] | None) -> bool:
        """Write (or delete, when ``document`` is None) unless the document changed since ``snapshot``."""
        try:
            if not snapshot.exists:
                if document is not None:
                    ref.create(document, timeout=self._timeout)
                return True
            option = self._client.write_option(last_update_time=snapshot.update_time)
            if document is None:
                ref.delete(option=option, timeout=self._timeout)
            else:
                ref.update(document, option=option, timeout=self._timeout)
            return True
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted):
            return False

    def release(self, user_id: str, connection_id: str) -> None:
        """Remove this stream's entry: one read (shared with other users' releases waiting), one conditioned write."""
        ref = self._connections_ref(user_id)
        with self._local_lock:
            self._local.discard(connection_id)
        with _backend("disconnect"):
            for attempt in range(TRANSACTION_ATTEMPTS):
                snapshot = self._release_reads.submit(user_id)
                live: dict[str, Any] = dict(_fields(snapshot).get("live") or {})
                if live.pop(connection_id, None) is None:
                    return
                document = connections_document(live, datetime.now(UTC)) if live else None
                if self._write_if_unchanged(ref, snapshot, document):
                    return
                _contended(attempt)
            raise BackendUnavailable(f"connections/{ref.id} stayed contended for {TRANSACTION_ATTEMPTS} attempts")

    def _read_connections(self, user_ids: list[str]) -> list[Any]:
        refs = [self._connections_ref(user_id) for user_id in user_ids]
        found = {snapshot.id: snapshot for snapshot in self._client.get_all(refs, timeout=self._timeout)}
        # get_all answers a missing document with a snapshot that does not exist; never with nothing.
        return [found[user_id] for user_id in user_ids]

    def stop(self) -> None:
        # One write, whatever the number of streams: entries of an instance without
        # a record stop counting at once (see _alive). Not retried: at shutdown a
        # failed delete is left to the heartbeat's expiry and the cleanup function.
        with _backend("instance stop"):
            self._instance_ref(self.instance_id).delete(retry=None, timeout=min(self._timeout, 3.0))


class FirestoreDirectory:
    """Where each user's streams are: the channel's router (one document read per user)."""

    def __init__(self, client: Any, *, timeout: float = 10.0) -> None:
        self._client = client
        self._timeout = timeout

    def instances_of(self, user_ids: Collection[str]) -> dict[str, list[str]]:
        """The instances named in each user's ``connections`` document; users without one are left out.

        No cache: a stream that registered a moment ago must be found by the next
        publish (what was published before its registration it recovers from the
        store). Entries of dead instances cost a publish to a topic that is gone.
        """
        refs = [self._client.collection(CONNECTIONS).document(u) for u in sorted(user_ids)]
        found: dict[str, list[str]] = {}
        with _backend("registry read for routing"):
            for snapshot in self._client.get_all(refs, field_paths=["instances"], timeout=self._timeout):
                instances = _fields(snapshot).get("instances")
                if isinstance(instances, list) and instances:
                    found[snapshot.id] = [str(i) for i in instances]
        return found


# --- pruning: what the cleanup function calls ----------------------------------------


def stale_instances_query(client: Any, stale_before: datetime, limit: int) -> Any:
    return (
        client.collection(INSTANCES)
        .where(filter=FieldFilter("heartbeat_at", "<", stale_before))
        .order_by("heartbeat_at")
        .limit(limit)
    )


def connections_of_instance_query(client: Any, instance_id: str, limit: int) -> Any:
    return (
        client.collection(CONNECTIONS)
        .where(filter=FieldFilter("instances", "array_contains", instance_id))
        .limit(limit)
        .select([])
    )


def idle_connections_query(client: Any, stale_before: datetime, limit: int) -> Any:
    return (
        client.collection(CONNECTIONS)
        .where(filter=FieldFilter("updated_at", "<", stale_before))
        .order_by("updated_at")
        .limit(limit)
    )


def instance_states(client: Any, instance_ids: Iterable[str], stale_before: datetime, **read: Any) -> dict[str, str]:
    """FRESH, STALE or MISSING for each instance id; ``read``: transaction= or retry=/timeout=."""
    ids = sorted(set(instance_ids))
    if not ids:
        return {}
    refs = [client.collection(INSTANCES).document(i) for i in ids]
    states = dict.fromkeys(ids, MISSING)
    for snapshot in client.get_all(refs, field_paths=["heartbeat_at"], **read):
        if snapshot.exists:
            heartbeat = (snapshot.to_dict() or {}).get("heartbeat_at")
            fresh = isinstance(heartbeat, datetime) and heartbeat >= stale_before
            states[snapshot.id] = FRESH if fresh else STALE
    return states


def entries_to_remove(live: dict[str, Any], states: dict[str, str], stale_before: datetime) -> list[str]:
    """Connection ids whose instance is stale, or missing and opened before ``stale_before``.

    A malformed entry (not a map, no instance) counts for nothing and goes too.
    """
    doomed = []
    for connection_id, entry in live.items():
        if not has_instance(entry):
            doomed.append(connection_id)
            continue
        state = states.get(entry["instance"], MISSING)
        opened = entry.get("opened_at")
        old = not isinstance(opened, datetime) or opened < stale_before
        if state == STALE or (state == MISSING and old):
            doomed.append(connection_id)
    return doomed


def prune_connections(client: Any, ref: Any, stale_before: datetime, *, max_attempts: int = 5) -> tuple[int, bool]:
    """In one transaction: drop the dead entries of ``connections/{user}``; delete it when empty.

    Returns the number of entries removed and whether the document changed (an
    ``instances`` array out of step with ``live`` is repaired too, so a stale
    instance never stays listed in a document without entries of it). Raises
    ValueError when the transaction stayed contended for ``max_attempts``.
    """

    @firestore.transactional  # type: ignore[misc, untyped-decorator, unused-ignore]
    def prune(transaction: Any) -> tuple[int, bool]:
        snapshot = ref.get(transaction=transaction)
        if not snapshot.exists:
            return 0, False
        data = snapshot.to_dict() or {}
        live = live_entries(data)
        named = {e["instance"] for e in live.values() if has_instance(e)}
        states = instance_states(client, named, stale_before, transaction=transaction)
        doomed = entries_to_remove(live, states, stale_before)
        kept = {cid: entry for cid, entry in live.items() if cid not in doomed}
        listed = data.get("instances")
        if not kept:
            transaction.delete(ref)
            return len(doomed), True
        document = connections_document(kept, firestore.SERVER_TIMESTAMP)
        if not doomed and isinstance(listed, list) and sorted(set(listed)) == document["instances"]:
            return 0, False
        transaction.update(ref, document)
        return len(doomed), True

    removed, changed = prune(client.transaction(max_attempts=max_attempts))
    return int(removed), bool(changed)
