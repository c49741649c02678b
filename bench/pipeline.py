"""Tier 3: the whole path on the emulators, and the operation counts the cost model uses.

worker (PublisherClient, batching) -> content topic -> push subscription ->
functions-framework running functions/ingest/main.py -> Firestore + channel topic
-> the real stream service (gcp backends on the emulators) -> SSE clients.

Both servers run with bench/hook on their PYTHONPATH, which counts Firestore
and Pub/Sub operations per process (bench/cost_hook.py) and records the ingest
function's own timings. Phases: connect, idle (heartbeats only), notifications,
disconnect; the counts of each phase are kept apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from bench.cost_hook import read_counts, read_timings
from bench.loadgen import StreamPool, summary_ms
from bench.servers import ROOT, Server, _spawn, python_env, start_stream_service
from devtools.emulators import Emulator, free_port
from devtools.emulators import start as start_emulator

logger = logging.getLogger("bench")

PROJECT = "bench-project"
# A fresh key per run: the servers and the load generator share it, nothing else does.
JWT_SECRET = secrets.token_hex(32)
HEARTBEAT = 5.0


def _phase(hook_dir: str) -> dict[str, Counter[str]]:
    return read_counts(hook_dir)


def _delta(after: dict[str, Counter[str]], before: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for role in set(after) | set(before):
        diff = Counter(after.get(role, Counter()))
        diff.subtract(before.get(role, Counter()))
        out[role] = {k: v for k, v in sorted(diff.items()) if v}
    return out


async def _wait_hook_flush() -> None:
    await asyncio.sleep(0.7)  # the hook writes its counts every 0.5 s; nothing to await across processes


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/notifications/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_ingest(env: dict[str, str]) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        str(ROOT / "functions" / "ingest" / "main.py"),
        "--target",
        "ingest_content_event",
        "--signature-type",
        "cloudevent",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return _spawn("ingest", command, python_env(env, hook=True), port)


def _event(user: str, key: str) -> bytes:
    return json.dumps(
        {
            "event_type": "content_generation.progress",
            "user_id": user,
            "title": "Rendering your video",
            "message": "Your video is being rendered; this event is part of a benchmark.",
            "content_request_id": key,
            "progress_percentage": 50,
            "metadata": {"bench": True},
        }
    ).encode()


def run_pipeline(quick: bool, rate: float | None = None) -> dict[str, Any]:
    users, default_rate, duration, idle = (10, 10.0, 5.0, HEARTBEAT) if quick else (50, 20.0, 20.0, 2 * HEARTBEAT)
    rate = rate or default_rate
    emulators: list[Emulator] = []
    servers: list[Server] = []
    hook_dir = tempfile.mkdtemp(prefix="bench-hook-")
    saved_env = dict(os.environ)
    try:
        started = time.monotonic()
        emulators = [start_emulator("pubsub", PROJECT), start_emulator("firestore", PROJECT)]
        emulator_seconds = time.monotonic() - started
        env = {"GOOGLE_CLOUD_PROJECT": PROJECT, **emulators[0].env(), **emulators[1].env()}
        os.environ.update(env)
        from functions.stream.config import load_stream_settings
        from shared.backends.pubsub_channel import ensure_topics

        settings = load_stream_settings({**env, "JWT_SECRET": JWT_SECRET})
        topics = [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic]
        ensure_topics(PROJECT, topics)
        common = {**env, "BENCH_HOOK_DIR": hook_dir, "LOG_LEVEL": "WARNING", "JWT_SECRET": JWT_SECRET}
        ingest = _start_ingest({**common, "BENCH_ROLE": "ingest", "BENCH_INGEST_TIMINGS": "1"})
        servers.append(ingest)
        _push_subscription(settings.content_events_topic, f"http://127.0.0.1:{ingest.port}", settings.project_id)
        stream_env = {
            **common,
            "BENCH_ROLE": "stream",
            "NOTIFICATIONS_BACKEND": "gcp",
            "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
            "SSE_MAX_CONNECTIONS_PER_USER": "3",
            "DEMO_PAGE": "0",
        }
        stream = start_stream_service(stream_env, hook=True)
        servers.append(stream)
        deadline = time.monotonic() + 30
        while not _health(stream.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        result = asyncio.run(_drive(stream, settings, hook_dir, users, rate, duration, idle))
        result["emulator_start_seconds"] = round(emulator_seconds, 1)
        return result
    except Exception as exc:  # reported in the results; the fan-out figures still stand
        logger.exception("pipeline failed")
        tails = {s.name: s.log.read_text(errors="replace")[-1500:] for s in servers if s.log.exists()}
        return {"error": f"{type(exc).__name__}: {exc}", "server_logs": tails}
    finally:
        for server in reversed(servers):
            server.stop()
        for emulator in emulators:
            emulator.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(hook_dir, ignore_errors=True)


def _push_subscription(topic: str, url: str, project: str) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(project, "bench-ingest-push"),
                "topic": f"projects/{project}/topics/{topic}",
                "push_config": {"push_endpoint": f"{url}/projects/{project}/topics/{topic}"},
                "ack_deadline_seconds": 60,
            }
        )
    finally:
        subscriber.close()


async def _drive(
    stream: Server, settings: Any, hook_dir: str, users: int, rate: float, duration: float, idle: float
) -> dict[str, Any]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from shared.tokens import mint_token

    names = [f"pu{n:04d}" for n in range(users)]
    tokens = {u: mint_token(u, settings, ttl_seconds=3600) for u in names}
    pool = StreamPool("127.0.0.1", stream.port, key_field="content_request_id")
    pool.record_receipts = True

    await _wait_hook_flush()
    c0 = _phase(hook_dir)
    await pool.open(names, lambda u: f"/api/v1/notifications/stream?token={tokens[u]}", rate=50.0)
    established = len(pool.established())
    await asyncio.sleep(1.0)
    await _wait_hook_flush()
    c1 = _phase(hook_dir)
    await asyncio.sleep(idle)
    await _wait_hook_flush()
    c2 = _phase(hook_dir)

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.01)
    )
    topic = publisher.topic_path(settings.project_id, settings.content_events_topic)
    per_user: dict[str, list[str]] = {}
    futures = []
    chooser = random.Random(11)
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(rate * duration)
    sent = 0
    first_publish = time.time()
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            user = names[chooser.randrange(users)]
            key = f"bench-{sent:06d}"
            pool.sent_at[key] = time.time()
            pool.user_of_key[key] = user
            per_user.setdefault(user, []).append(key)
            futures.append(publisher.publish(topic, _event(user, key)))
            sent += 1
        await asyncio.sleep(0.02)
    for future in futures:
        await asyncio.wrap_future(future)
    publisher.stop()
    expected = pool.expected(per_user)
    deadline = time.monotonic() + 60
    while pool.delivered() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await _wait_hook_flush()
    c3 = _phase(hook_dir)
    pool.close()
    # Each stream's end removes its registry entry: wait for those commits to be counted.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        await _wait_hook_flush()
        done = _delta(_phase(hook_dir), c3).get("stream", {}).get("firestore.commit_rpcs", 0)
        if done >= established:
            break
    c4 = _phase(hook_dir)

    timings = {t["key"]: t for t in read_timings(hook_dir) if t.get("key")}
    received = dict(pool.receive_log)
    stages: dict[str, list[float]] = {
        "worker publish -> ingest start (Pub/Sub push)": [],
        "ingest validate": [],
        "ingest apply (Firestore transaction)": [],
        "ingest publish (channel topic)": [],
        "ingest end -> SSE receive (Pub/Sub + stream)": [],
    }
    for key, sent_at in pool.sent_at.items():
        t = timings.get(key)
        if t is None:
            continue
        stages["worker publish -> ingest start (Pub/Sub push)"].append(t["start"] - sent_at)
        stages["ingest validate"].append(t.get("validate", 0.0))
        stages["ingest apply (Firestore transaction)"].append(t.get("persist", 0.0))
        stages["ingest publish (channel topic)"].append(t.get("publish", 0.0))
        if key in received:
            stages["ingest end -> SSE receive (Pub/Sub + stream)"].append(received[key] - t["end"])
    span = (pool.last_receive or time.time()) - first_publish
    return {
        "users": users,
        "streams": len(names),
        "established": established,
        "rate": rate,
        "duration": duration,
        "published": sent,
        "expected": expected,
        "received": pool.delivered(),
        "lost": pool.lost(per_user),
        "duplicated": pool.duplicates(),
        "ingest_invocations": len(timings),
        "throughput_per_s": round(pool.delivered() / span, 1) if span > 0 else None,
        "end_to_end_ms": summary_ms(pool.latencies),
        "stages_ms": {name: summary_ms(values) for name, values in stages.items()},
        "heartbeat_seconds": HEARTBEAT,
        "idle_seconds": idle,
        "counts": {
            "connect": _delta(c1, c0),
            "idle": _delta(c2, c1),
            "notifications": _delta(c3, c2),
            "disconnect": _delta(c4, c3),
        },
    }
