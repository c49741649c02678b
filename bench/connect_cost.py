"""CPU a connect costs the stream process and Firestore: the registry's read-then-write against its one write.

    .venv/bin/python -m bench.connect_cost [--connects 400]  # writes bench/connect_cost.json

On the Firestore emulator (started here), in this one process, alternating
rounds of each way so machine noise falls on both alike, one connect at a
time and 16 at once. Each way runs the production classes, then reads the feed
head as the hub does (``FirestoreStore.head(user, known)``: the user document,
with the broadcast number the process already knows):

- ``read_then_write``: what every connect did until now, and what one over the
  limit still does (``FirestoreRegistry._settle``): read ``connections/{user}``,
  count the live entries, write conditioned on that read;
- ``one_write_through_client``: ``FirestoreRegistry.acquire``: add the entry
  and increment ``count`` in one write that returns the new count, its commit
  and the head read sent through the client's GAPIC layer (a streaming
  BatchGetDocuments), as connects did until the session of 2026-11-30, evening;
- ``one_write``: the same on the client's channel directly, the head read a
  one-document BatchGetDocuments (``shared/backends/firestore_rpc.py``), as
  connects do now.

Each way connects a fresh user per connect, as a reconnect storm does.
Reported per connect: this process's CPU (user + system, all threads, gRPC's
included), the emulator's CPU (its whole process group), and connects per
second. On a machine where the emulator shares the cores with the stream
service, the emulator's share is what bounds the connect rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadgen import own_cpu_seconds
from bench.servers import ROOT, group_cpu_seconds, stop_on_sigterm

RESULT = ROOT / "bench" / "connect_cost.json"
ROUNDS = 4
# One connect at a time (the client's own cost), and a storm (how the emulator copes).
CONCURRENCY = (1, 16)


def _measure(connect: Callable[[str], None], users: list[str], threads: int, emulator_group: int) -> list[float]:
    """[own CPU, emulator CPU, wall] of connecting ``users`` from ``threads`` threads at once."""
    cpu, emulator, wall = own_cpu_seconds(), group_cpu_seconds(emulator_group), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(connect, users))
    return [own_cpu_seconds() - cpu, group_cpu_seconds(emulator_group) - emulator, time.perf_counter() - wall]


def _through_client(project: str) -> tuple[Any, Any]:
    """A registry and a store whose two connect calls go through the client's GAPIC layer, as they used to."""
    from google.cloud.firestore_v1.types.firestore import (
        BatchGetDocumentsRequest,
        BatchGetDocumentsResponse,
        CommitRequest,
        CommitResponse,
    )

    from shared.backends.firestore_registry import FirestoreRegistry, _connect_writes, _new_counts
    from shared.backends.firestore_store import MUTED, SEQ, FirestoreStore

    class ClientRegistry(FirestoreRegistry):
        def _commit_connects(self, connects: list[Any]) -> list[int | None]:
            client = self._client
            request = _connect_writes(client._database_string, self.instance_id, connects)
            response = client._firestore_api.commit(
                request=CommitRequest.wrap(request), timeout=10, metadata=client._rpc_metadata
            )
            return _new_counts(CommitResponse.pb(response))

    class ClientStore(FirestoreStore):
        def _fields(self, paths: list[str]) -> list[Any | None]:
            client = self.client
            request = BatchGetDocumentsRequest.pb()(
                database=client._database_string, documents=paths, mask={"field_paths": [SEQ, MUTED]}
            )
            responses = client._firestore_api.batch_get_documents(
                request=BatchGetDocumentsRequest.wrap(request), metadata=client._rpc_metadata, timeout=10
            )
            found: dict[str, Any] = {}
            for response in responses:
                raw = BatchGetDocumentsResponse.pb(response)
                if raw.WhichOneof("result") == "found":
                    found[raw.found.name] = raw.found.fields
            return [found.get(path) for path in paths]

    store = ClientStore(project, timeout=10)
    return ClientRegistry(store.client, "bench-instance-client", 5, 30), store


def _ways(project: str) -> dict[str, Callable[[str], None]]:
    from shared.backends.firestore_registry import FirestoreRegistry
    from shared.backends.firestore_store import FirestoreStore

    store = FirestoreStore(project, timeout=10)
    registry = FirestoreRegistry(store.client, "bench-instance", 5, 30)
    registry.start(subscription="")
    known = store.head("nobody").broadcast_seq
    client_registry, client_store = _through_client(project)
    client_registry.start(subscription="")

    def read_then_write(user: str) -> None:
        entry = {"instance": registry.instance_id, "opened_at": datetime.now(UTC)}
        # The registry's own slow path, as a connect over the limit takes it.
        registry._settle(registry._connections_ref(user), uuid.uuid4().hex, entry, None)
        store.head(user, known)

    def one_write_through_client(user: str) -> None:
        client_registry.acquire(user, uuid.uuid4().hex)
        client_store.head(user, known)

    def one_write(user: str) -> None:
        registry.acquire(user, uuid.uuid4().hex)
        store.head(user, known)

    return {
        "read_then_write": read_then_write,
        "one_write_through_client": one_write_through_client,
        "one_write": one_write,
    }


def run(connects: int) -> dict[str, Any]:
    from devtools import emulators

    project = f"bench-connect-{uuid.uuid4().hex[:6]}"
    emulator = emulators.start("firestore", project)
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ.update(emulator.env())
    try:
        assert emulator.process is not None
        group = emulator.process.pid  # started in a session of its own: the JVM is in this group
        ways = _ways(project)
        for name, connect in ways.items():  # warm both clients and the emulator's JIT
            _measure(connect, [f"warm-{name}-{i}" for i in range(100)], 8, group)
        per_round = max(1, connects // ROUNDS)
        totals = {(name, threads): [0.0, 0.0, 0.0] for threads in CONCURRENCY for name in ways}
        for number in range(ROUNDS):
            for threads in CONCURRENCY:
                for name, connect in ways.items():
                    users = [f"{name}-{threads}-{number}-{i}" for i in range(per_round)]
                    measured = _measure(connect, users, threads, group)
                    totals[name, threads] = [a + b for a, b in zip(totals[name, threads], measured, strict=True)]
        count = per_round * ROUNDS
        return {
            "connects_per_way_and_concurrency": count,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "ways": [
                {
                    "way": name,
                    "concurrent_connects": threads,
                    "process_cpu_ms_per_connect": round(1000 * cpu / count, 2),
                    "emulator_cpu_ms_per_connect": round(1000 * emulator / count, 2),
                    "connects_per_second": round(count / wall, 1),
                }
                for (name, threads), (cpu, emulator, wall) in totals.items()
            ],
        }
    finally:
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description="CPU per connect of its Firestore calls, three ways")
    parser.add_argument("--connects", type=int, default=400)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    result = run(args.connects)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
