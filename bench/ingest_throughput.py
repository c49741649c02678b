"""Ingest throughput: events/s of one ingest process on the emulators, CPU per event in memory.

    .venv/bin/python -m bench.ingest_throughput [--events 400] [--concurrency 8]

1. In-memory backends: CPU milliseconds per event of `functions.ingest.ingest.ingest` (process time).
2. One functions-framework process serving the real ingest function against the
   Pub/Sub and Firestore emulators, fed with push deliveries over HTTP at the given
   concurrency: events/s, latency per delivery, and the server's CPU per event.
Emulators are started here and stopped at the end. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx

from bench.servers import group_cpu_seconds, stop_on_sigterm
from devtools import emulators
from functions.ingest.ingest import PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.backends.pubsub_channel import ensure_topics
from shared.config import load_settings
from tests.support.events import valid_event
from tests.support.processes import start_function
from tests.support.pubsub import push_envelope

PROJECT = "bench-project"


def memory_cpu_per_event(events: int) -> dict[str, float]:
    settings = load_settings({"NOTIFICATIONS_BACKEND": "memory"})
    backends = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    messages = [
        PubsubMessage(json.dumps(valid_event(f"u{i % 100}")).encode(), {}, f"m{i}", datetime.now(UTC))
        for i in range(events)
    ]
    started = time.process_time()
    for message in messages:
        ingest(message, backends, settings)
    cpu = time.process_time() - started
    return {"events": events, "cpu_ms_per_event": round(cpu * 1000 / events, 3)}


def emulator_throughput(events: int, concurrency: int) -> dict[str, float]:
    pubsub = emulators.start("pubsub", PROJECT)
    firestore = emulators.start("firestore", PROJECT)
    env = {**pubsub.env(), **firestore.env(), "GOOGLE_CLOUD_PROJECT": PROJECT, "LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    settings = load_settings()
    ensure_topics(PROJECT, [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic])
    server = start_function("functions/ingest/main.py", "ingest_content_event", env)
    url = f"{server.url}/projects/{PROJECT}/topics/{settings.content_events_topic}"
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    try:
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:

            def deliver(i: int) -> None:
                nonlocal failures
                data = json.dumps(valid_event(f"user-{i % 50}", event_id=uuid.uuid4().hex)).encode()
                started = time.perf_counter()
                status = client.post(url, json=push_envelope(data, {}, f"m-{i}", "s")).status_code
                with lock:
                    latencies.append(time.perf_counter() - started)
                    failures += status != 200

            with ThreadPoolExecutor(concurrency) as pool:  # warm-up: clients, connections
                list(pool.map(deliver, range(20)))
            latencies.clear()
            cpu_before = group_cpu_seconds(server.process.pid)
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(deliver, range(events)))
            elapsed = time.perf_counter() - started
            cpu = group_cpu_seconds(server.process.pid) - cpu_before
    finally:
        server.stop()
        firestore.stop()
        pubsub.stop()
    latencies.sort()
    return {
        "events": events,
        "concurrency": concurrency,
        "failures": failures,
        "events_per_second": round(events / elapsed, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "server_cpu_ms_per_event": round(cpu * 1000 / events, 2),
    }


def main() -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    result = {
        "load_average": os.getloadavg(),
        "memory_backends": memory_cpu_per_event(max(args.events * 5, 1000)),
        "emulators": emulator_throughput(args.events, args.concurrency),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
