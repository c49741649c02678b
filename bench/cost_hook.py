"""Counts what the real google-cloud clients do, inside the processes the bench starts.

Installed by bench/hook/sitecustomize.py when BENCH_HOOK_DIR is set. It wraps
the generated (GAPIC) Firestore client, so every path of the library - batches,
transactions, queries, get_all - is counted at the RPC that is billed, and the
Pub/Sub publisher and subscriber. Firestore bills documents, not RPCs: a
commit counts its writes and deletes, a query or a batch get counts the
documents it returns (a query returning none still costs one read).

Optionally (BENCH_INGEST_TIMINGS=1) it wraps ``functions.ingest.ingest.ingest`` and
the public methods it calls (the store's ``apply``, the channel's ``publish_many``)
to record where each delivery's time goes. Every 0.5 s the process writes its counts to
``$BENCH_HOOK_DIR/<pid>.json`` and appends new timings to ``<pid>.timings.jsonl``.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

COUNTS: Counter[str] = Counter()
TIMINGS: list[dict[str, Any]] = []
# BENCH_PROFILE=1: when the process paused for garbage collection and when the
# stream hub wrote heartbeats to every stream, to explain latency spikes.
GC_PAUSES: list[tuple[float, float, int]] = []  # (start, seconds, generation)
HEARTBEATS: list[tuple[float, float, int]] = []  # (start, seconds in the call, streams)
_LOCK = threading.Lock()
_DIR: Path | None = None


def count(name: str, n: int = 1) -> None:
    with _LOCK:
        COUNTS[name] += n


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs.get("request", args[0] if args else None)


def _counting_stream(responses: Iterable[Any], name: str, has_document: Callable[[Any], bool]) -> Iterator[Any]:
    # Counted as they arrive: callers often stop at the first document (DocumentReference.get).
    documents = 0
    try:
        for response in responses:
            if has_document(response):
                documents += 1
                count(name)
            yield response
    finally:
        if documents == 0:
            count(name)  # a query that matches nothing is billed one read


def _patch_firestore() -> None:
    from google.cloud.firestore_v1.services.firestore import client as gapic

    cls = gapic.FirestoreClient
    commit, batch_get, run_query = cls.commit, cls.batch_get_documents, cls.run_query
    aggregation, get_document = cls.run_aggregation_query, cls.get_document

    @functools.wraps(commit)
    def counted_commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = _request(args, kwargs)
        if isinstance(request, dict):
            writes = list(request.get("writes") or [])
        else:
            writes = list(getattr(request, "writes", None) or [])
        deletes = sum(1 for w in writes if _is_delete(w))
        count("firestore.commit_rpcs")
        result = commit(self, *args, **kwargs)
        count("firestore.writes", len(writes) - deletes)
        count("firestore.deletes", deletes)
        return result

    @functools.wraps(batch_get)
    def counted_batch_get(self: Any, *args: Any, **kwargs: Any) -> Any:
        count("firestore.batch_get_rpcs")
        return _counting_stream(batch_get(self, *args, **kwargs), "firestore.reads", lambda r: True)

    @functools.wraps(run_query)
    def counted_run_query(self: Any, *args: Any, **kwargs: Any) -> Any:
        count("firestore.query_rpcs")
        return _counting_stream(
            run_query(self, *args, **kwargs), "firestore.reads", lambda r: bool(getattr(r, "document", None))
        )

    @functools.wraps(aggregation)
    def counted_aggregation(self: Any, *args: Any, **kwargs: Any) -> Any:
        count("firestore.aggregation_rpcs")
        count("firestore.reads")  # one read per up to 1,000 index entries; our counts are small
        return aggregation(self, *args, **kwargs)

    @functools.wraps(get_document)
    def counted_get_document(self: Any, *args: Any, **kwargs: Any) -> Any:
        count("firestore.reads")
        return get_document(self, *args, **kwargs)

    # Patched on the class so every client the library creates is counted.
    cls.commit = counted_commit  # type: ignore[method-assign]
    cls.batch_get_documents = counted_batch_get  # type: ignore[method-assign]
    cls.run_query = counted_run_query  # type: ignore[method-assign]
    cls.run_aggregation_query = counted_aggregation  # type: ignore[method-assign]
    cls.get_document = counted_get_document  # type: ignore[method-assign]
    for name in ("begin_transaction", "rollback", "listen", "list_documents"):
        _count_calls(cls, name, f"firestore.{name}_rpcs")
    _patch_firestore_rpc()


def _patch_firestore_rpc() -> None:
    """The calls every connect makes on the client's channel directly, past the client patched above."""
    from shared.backends.firestore_rpc import FirestoreRpc

    commit, fields = FirestoreRpc.commit, FirestoreRpc.fields

    @functools.wraps(commit)
    def counted_commit(self: Any, request: Any) -> Any:
        deletes = sum(1 for w in request.writes if _is_delete(w))
        count("firestore.commit_rpcs")
        result = commit(self, request)
        count("firestore.writes", len(request.writes) - deletes)
        count("firestore.deletes", deletes)
        return result

    @functools.wraps(fields)
    def counted_fields(self: Any, paths: Any, mask: Any) -> Any:
        # One BatchGetDocuments, billed a read per document asked for.
        count("firestore.batch_get_rpcs")
        result = fields(self, paths, mask)
        count("firestore.reads", len(paths))
        return result

    FirestoreRpc.commit = counted_commit  # type: ignore[method-assign]
    FirestoreRpc.fields = counted_fields  # type: ignore[method-assign]


def _is_delete(write: Any) -> bool:
    if isinstance(write, dict):
        return bool(write.get("delete"))
    pb = getattr(write, "_pb", write)
    try:
        return bool(pb.WhichOneof("operation") == "delete")
    except (AttributeError, ValueError):
        return bool(getattr(write, "delete", ""))


def _count_calls(cls: Any, name: str, counter: str) -> None:
    original = getattr(cls, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        count(counter)
        return original(self, *args, **kwargs)

    setattr(cls, name, wrapper)


def _message_bytes(data: bytes, attributes: dict[str, Any]) -> int:
    # Pub/Sub's billable size of a message: data, attributes, 20 bytes of timestamp, the id.
    return len(data) + sum(len(str(k)) + len(str(v)) for k, v in attributes.items()) + 20 + 16


def _patch_pubsub() -> None:
    from google.cloud.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher import client as publisher_gapic

    from shared.backends.pubsub_channel import InstanceSubscription

    publish = PublisherClient.publish

    @functools.wraps(publish)
    def counted_publish(self: Any, topic: str, data: bytes, *args: Any, **attrs: Any) -> Any:
        count("pubsub.publishes")
        count("pubsub.publish_bytes", _message_bytes(data, {k: v for k, v in attrs.items() if isinstance(v, str)}))
        return publish(self, topic, data, *args, **attrs)

    PublisherClient.publish = counted_publish  # type: ignore[method-assign]

    gapic_publish = publisher_gapic.PublisherClient.publish

    @functools.wraps(gapic_publish)
    def counted_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = _request(args, kwargs)
        messages = list(getattr(request, "messages", []) or [])
        size = sum(_message_bytes(bytes(m.data), dict(m.attributes)) for m in messages)
        count("pubsub.publish_requests")
        count("pubsub.publish_billable_bytes", max(size, 1000))
        return gapic_publish(self, *args, **kwargs)

    publisher_gapic.PublisherClient.publish = counted_request  # type: ignore[method-assign]

    # The stream service's own streaming pull hands each response's messages to deliver().
    deliver = InstanceSubscription.deliver

    @functools.wraps(deliver)
    def counted_deliver(self: Any, received: Any) -> None:
        for item in received:
            size = _message_bytes(bytes(item.message.data), dict(item.message.attributes))
            count("pubsub.pull_deliveries")
            count("pubsub.pull_bytes", size)
            # Streaming pull responses usually carry one message at this rate; billed at least 1 KB each.
            count("pubsub.pull_billable_bytes", max(size, 1000))
        deliver(self, received)

    InstanceSubscription.deliver = counted_deliver  # type: ignore[method-assign]


_PHASES = threading.local()


def _timed(cls: Any, method: str, phase: str) -> None:
    original = getattr(cls, method)

    @functools.wraps(original)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        phases = getattr(_PHASES, "current", None)
        begin = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            if phases is not None:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - begin

    setattr(cls, method, timed)


def _patch_ingest() -> None:
    import functions.ingest.ingest as ingest_module
    from shared.backends.firestore_store import FirestoreStore
    from shared.backends.pubsub_channel import PubSubChannel

    _timed(FirestoreStore, "apply", "persist")
    _timed(PubSubChannel, "publish_many", "publish")
    original = ingest_module.ingest

    @functools.wraps(original)
    def timed_ingest(message: Any, backends: Any, settings: Any, **kwargs: Any) -> Any:
        phases: dict[str, float] = {}
        _PHASES.current = phases
        started = time.time()
        begin = time.perf_counter()
        count("pubsub.push_deliveries")
        size = _message_bytes(bytes(message.data), dict(message.attributes))
        count("pubsub.push_billable_bytes", max(size, 1000))
        try:
            outcome = original(message, backends, settings, **kwargs)
        finally:
            _PHASES.current = None
        total = time.perf_counter() - begin
        key = None
        try:
            key = json.loads(message.data).get("content_request_id")
        except (ValueError, AttributeError):
            pass
        record = {"key": key, "start": started, "end": time.time(), "outcome": getattr(outcome, "value", None)}
        # What is not the store or the channel is validation (and logging).
        record["validate"] = max(0.0, total - phases.get("persist", 0.0) - phases.get("publish", 0.0))
        record.update(phases)
        with _LOCK:
            TIMINGS.append(record)
        return outcome

    ingest_module.ingest = timed_ingest


def _patch_profile() -> None:
    import gc

    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.time()
        elif info.get("generation", 0) >= 1:
            now = time.time()
            with _LOCK:
                GC_PAUSES.append((started[0], now - started[0], int(info.get("generation", 0))))

    gc.callbacks.append(on_gc)
    try:
        from functions.stream.hub import Hub
    except ImportError:
        return
    original = Hub.heartbeat

    @functools.wraps(original)
    def timed_heartbeat(self: Any) -> int:
        # The hub heartbeats one slice of its streams per call and says how many it touched.
        begin = time.time()
        streams = original(self)
        with _LOCK:
            HEARTBEATS.append((begin, time.time() - begin, streams))
        return streams

    Hub.heartbeat = timed_heartbeat  # type: ignore[method-assign]


def flush() -> None:
    if _DIR is None:
        return
    pid = os.getpid()
    with _LOCK:
        counts = dict(COUNTS)
        timings = TIMINGS[:]
        TIMINGS.clear()
        profile = {"gc": GC_PAUSES[:], "heartbeats": HEARTBEATS[:]}
    target = _DIR / f"{pid}.json"
    temporary = _DIR / f".{pid}.json.tmp"
    temporary.write_text(json.dumps({"role": os.environ.get("BENCH_ROLE", ""), "pid": pid, "counts": counts}))
    temporary.replace(target)
    if profile["gc"] or profile["heartbeats"]:
        temporary = _DIR / f".{pid}.profile.tmp"
        temporary.write_text(json.dumps(profile))
        temporary.replace(_DIR / f"{pid}.profile")
    if timings:
        with (_DIR / f"{pid}.timings.jsonl").open("a") as out:
            for record in timings:
                out.write(json.dumps(record) + "\n")


def _flusher() -> None:
    while True:
        time.sleep(0.5)
        try:
            flush()
        except OSError:
            pass


def _start_flusher() -> None:
    threading.Thread(target=_flusher, name="bench-cost-hook", daemon=True).start()


def _after_fork() -> None:
    # A forked worker (gunicorn) starts its own tally; the parent keeps writing its own file.
    with _LOCK:
        COUNTS.clear()
        TIMINGS.clear()
    _start_flusher()


def install(directory: str) -> None:
    global _DIR
    _DIR = Path(directory)
    _DIR.mkdir(parents=True, exist_ok=True)
    if os.environ.get("BENCH_COUNT", "1") == "1":
        _patch_firestore()
        _patch_pubsub()
    if os.environ.get("BENCH_PROFILE") == "1":
        _patch_profile()
    if os.environ.get("BENCH_INGEST_TIMINGS") == "1":
        _patch_ingest()
    os.register_at_fork(after_in_child=_after_fork)
    _start_flusher()


def read_counts(directory: str | Path) -> dict[str, Counter[str]]:
    """Counts of every hooked process, summed by role."""
    totals: dict[str, Counter[str]] = {}
    for path in Path(directory).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        totals.setdefault(data.get("role", ""), Counter()).update(data.get("counts", {}))
    return totals


def read_profile(directory: str | Path) -> dict[str, list[list[float]]]:
    merged: dict[str, list[list[float]]] = {"gc": [], "heartbeats": []}
    for path in Path(directory).glob("*.profile"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in merged:
            merged[key].extend(data.get(key, []))
    return merged


def read_timings(directory: str | Path) -> list[dict[str, Any]]:
    records = []
    for path in Path(directory).glob("*.timings.jsonl"):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records
