"""Measure one cleanup run on private emulators: how much it removes per second of budget.

    .venv/bin/python -m ops.measure_cleanup --notifications 2000 --instances 20 --users 400

Seeds expired notifications (with their keys), stale instances with their
subscriptions and connection entries, then runs cleanup once and prints the
report as JSON. Emulator figures: real Firestore has other latencies.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--budget", type=float, default=50.0)
    args = parser.parse_args()

    from devtools import emulators

    project = f"measure-{uuid.uuid4().hex[:6]}"
    pubsub = emulators.start("pubsub", project)
    firestore_emulator = emulators.start("firestore", project)
    try:
        os.environ.update({**pubsub.env(), **firestore_emulator.env(), "GOOGLE_CLOUD_PROJECT": project})
        from google.cloud import firestore, pubsub_v1

        from functions.cleanup.run import run_cleanup
        from shared.backends import firestore_registry as registry
        from shared.backends.pubsub_channel import ensure_topics, instance_subscription_id
        from shared.config import load_settings

        settings = load_settings()
        ensure_topics(project, [settings.notifications_topic])
        db = firestore.Client(project=project)
        subscriber = pubsub_v1.SubscriberClient()
        now = datetime.now(UTC)
        old = now - timedelta(seconds=settings.sse_connection_timeout * 3)
        batch = db.batch()
        writes = 0

        def add(ref: Any, data: dict[str, Any]) -> None:
            nonlocal batch, writes
            batch.set(ref, data)
            writes += 1
            if writes % 400 == 0:
                batch.commit()
                batch = db.batch()

        for n in range(args.notifications):
            user = db.collection("users").document(f"u{n % 100}")
            add(user.collection("notifications").document(f"{n:024x}"), {"expire_at": now - timedelta(days=1)})
            add(user.collection("event_keys").document(f"k{n}"), {"expire_at": now - timedelta(days=1)})
        instances = [f"stale-{i}" for i in range(args.instances)]
        for instance in instances:
            path = f"projects/{project}/subscriptions/{instance_subscription_id(instance)}"
            subscriber.create_subscription(
                request={"name": path, "topic": f"projects/{project}/topics/{settings.notifications_topic}"}
            )
            add(db.collection(registry.INSTANCES).document(instance), registry.instance_document(old, old, path))
        for u in range(args.users):
            instance = instances[u % len(instances)] if instances else "gone"
            live = {f"c{u}": {"instance": instance, "opened_at": old}}
            add(db.collection(registry.CONNECTIONS).document(f"user-{u}"), registry.connections_document(live, old))
        batch.commit()

        started = time.monotonic()
        report = run_cleanup(db, subscriber, settings, args.budget)
        wall = time.monotonic() - started
        print(json.dumps({**report.to_dict(), "wall_seconds": round(wall, 3), "seeded": vars(args)}))
        subscriber.close()
        db.close()  # type: ignore[no-untyped-call]
    finally:
        firestore_emulator.stop()
        pubsub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
