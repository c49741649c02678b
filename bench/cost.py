"""Operation counts from the pipeline run -> cost per notification, per connected user-hour, per month."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRICES = Path(__file__).with_name("prices.json")

OPERATIONS = (
    "firestore.reads",
    "firestore.writes",
    "firestore.deletes",
    "pubsub.publishes",
    "pubsub.deliveries",
    "pubsub.billable_kb",
)


def _role(counts: dict[str, dict[str, int]], role: str, key: str) -> int:
    return int(counts.get(role, {}).get(key, 0))


def _firestore(counts: dict[str, dict[str, int]], roles: tuple[str, ...]) -> dict[str, float]:
    return {
        f"firestore.{op}": float(sum(_role(counts, r, f"firestore.{op}") for r in roles))
        for op in ("reads", "writes", "deletes")
    }


def cost_section(pipeline: dict[str, Any], prices_path: Path = PRICES) -> dict[str, Any]:
    if "error" in pipeline or not pipeline.get("received"):
        return {"error": "no pipeline figures to derive costs from"}
    prices = json.loads(prices_path.read_text())
    scenario = prices["scenario"]
    counts = pipeline["counts"]
    minimum = prices["pubsub"]["min_bytes_per_request"]
    published = max(1, pipeline["published"])
    connections = max(1, pipeline["established"])
    instances = scenario["stream_instances"]

    # Per notification: the ingest function's work, plus what the stream side read for it.
    note = counts["notifications"]
    per_notification = {k: v / published for k, v in _firestore(note, ("ingest",)).items()}
    per_notification["firestore.reads"] += _role(note, "stream", "firestore.reads") / published
    # Pub/Sub: the worker's publish, the push to ingest, the channel publish, and one delivery to
    # each instance that holds the user's streams (routed: the one instance of the run held them
    # all, as one instance holds a user with one stream, whatever the fleet's size).
    channel_publishes = _role(note, "ingest", "pubsub.publishes") / published
    pushes = _role(note, "ingest", "pubsub.push_deliveries") / published
    pulls = _role(note, "stream", "pubsub.pull_deliveries") / published
    per_notification["pubsub.publishes"] = 1 + channel_publishes
    per_notification["pubsub.deliveries"] = pushes + pulls
    billable = (
        minimum  # the worker's publish request (at least 1,000 bytes)
        + _role(note, "ingest", "pubsub.publish_billable_bytes") / published
        + _role(note, "ingest", "pubsub.push_billable_bytes") / published
        + _role(note, "stream", "pubsub.pull_billable_bytes") / published
    )
    per_notification["pubsub.billable_kb"] = billable / 1000

    # Per connection (connect + disconnect); an instance heartbeat falling in those phases adds at most
    # 1/N write per connection.
    idle = counts["idle"]
    heartbeats_idle = max(1.0, pipeline["idle_seconds"] / pipeline["heartbeat_seconds"])
    per_heartbeat = _firestore(idle, ("stream",))
    per_heartbeat = {k: v / heartbeats_idle for k, v in per_heartbeat.items()}
    connect = _firestore(counts["connect"], ("stream",))
    disconnect = _firestore(counts["disconnect"], ("stream",))
    per_connection = {k: (connect[k] + disconnect[k]) / connections for k in connect}

    heartbeats_per_hour = 3600 / scenario["heartbeat_seconds"]
    user_hours_per_instance_hour = scenario["users"] * scenario["connected_hours_per_user_per_day"] / 24 / instances
    per_user_hour = {
        k: per_connection[k] * scenario["connects_per_connected_hour"]
        + per_heartbeat[k] * heartbeats_per_hour / user_hours_per_instance_hour
        for k in per_connection
    }
    per_user_hour.update({"pubsub.publishes": 0.0, "pubsub.deliveries": 0.0, "pubsub.billable_kb": 0.0})

    days = scenario["days_per_month"]
    notifications = scenario["users"] * scenario["notifications_per_user_per_day"] * days
    user_hours = scenario["users"] * scenario["connected_hours_per_user_per_day"] * days
    fs = prices["firestore"]
    expiry_deletes = 2 * notifications  # the TTL policy deletes the notification and its event key
    reads = notifications * per_notification["firestore.reads"] + user_hours * per_user_hour["firestore.reads"]
    writes = notifications * per_notification["firestore.writes"] + user_hours * per_user_hour["firestore.writes"]
    deletes = (
        notifications * per_notification["firestore.deletes"]
        + user_hours * per_user_hour["firestore.deletes"]
        + expiry_deletes
    )
    stored_gib = (
        scenario["users"]
        * scenario["notifications_per_user_per_day"]
        * scenario["retention_days"]
        * scenario["stored_bytes_per_notification"]
        / 2**30
    )
    pubsub_gib = notifications * per_notification["pubsub.billable_kb"] * 1000 / 2**30
    billable_gib = max(0.0, pubsub_gib - prices["pubsub"]["free_gib_per_month"])
    items = [
        {
            "item": "Firestore document reads",
            "quantity": reads,
            "unit": "reads",
            "usd": reads / 1e5 * fs["read_per_100k"],
        },
        {
            "item": "Firestore document writes",
            "quantity": writes,
            "unit": "writes",
            "usd": writes / 1e5 * fs["write_per_100k"],
        },
        {
            "item": "Firestore deletes (registry + TTL expiry)",
            "quantity": deletes,
            "unit": "deletes",
            "usd": deletes / 1e5 * fs["delete_per_100k"],
        },
        {
            "item": "Firestore storage (retention window)",
            "quantity": stored_gib,
            "unit": "GiB",
            "usd": stored_gib * fs["storage_per_gib_month"],
        },
        {
            "item": "Pub/Sub throughput (after 10 GiB free)",
            "quantity": pubsub_gib,
            "unit": "GiB",
            "usd": billable_gib / 1024 * prices["pubsub"]["per_tib"],
        },
    ]
    return {
        "operations": list(OPERATIONS),
        "per_notification": {k: round(v, 3) for k, v in per_notification.items()},
        "per_connection": {k: round(v, 3) for k, v in per_connection.items()},
        "per_instance_heartbeat": {k: round(v, 3) for k, v in per_heartbeat.items()},
        "per_user_hour": {k: round(v, 4) for k, v in per_user_hour.items()},
        "scenario": (
            f"{scenario['users']:,} users x {scenario['notifications_per_user_per_day']} notifications/day, "
            f"{scenario['connected_hours_per_user_per_day']} connected h/day, {instances} stream instances"
        ),
        "monthly": {
            "notifications": notifications,
            "connected_user_hours": user_hours,
            "items": [{**i, "usd": round(i["usd"], 2)} for i in items],
            "total_usd": round(sum(i["usd"] for i in items), 2),
        },
        "prices_source": f"bench/prices.json ({prices['date']}): {prices['source']}",
        "notes": [
            "Counted in the processes the bench started by wrapping the google-cloud clients (bench/cost_hook.py):"
            " Firestore documents per commit, query and batch get; Pub/Sub messages and request sizes.",
            "The channel is routed: a notification is delivered to the instances that hold its user's streams"
            " (one in the run), whatever the number of instances; a user with no stream costs no delivery.",
            "Free tiers are not subtracted for Firestore (50k reads, 20k writes, 20k deletes a day); Pub/Sub's"
            " 10 GiB are. TTL expiry deletes (2 per notification) are from the layout, not measured in the run.",
            "Cloud Run, Cloud Functions and Cloud Scheduler compute are not included.",
        ],
    }
