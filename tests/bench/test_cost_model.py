"""The cost model turns counted operations into per-notification figures and a monthly total."""

from __future__ import annotations

from typing import Any

from bench.cost import cost_section


def _pipeline() -> dict[str, Any]:
    return {
        "published": 100,
        "received": 100,
        "established": 10,
        "idle_seconds": 10.0,
        "heartbeat_seconds": 5.0,
        "counts": {
            "connect": {"stream": {"firestore.reads": 10, "firestore.writes": 10}},
            "idle": {"stream": {"firestore.writes": 2}},
            "notifications": {
                "ingest": {
                    "firestore.writes": 200,
                    "pubsub.publishes": 100,
                    "pubsub.push_deliveries": 100,
                    "pubsub.publish_billable_bytes": 100_000,
                    "pubsub.push_billable_bytes": 100_000,
                },
                "stream": {"pubsub.pull_deliveries": 100, "pubsub.pull_billable_bytes": 100_000},
            },
            "disconnect": {"stream": {"firestore.reads": 10, "firestore.deletes": 10}},
        },
    }


def test_per_notification_and_per_connection_counts() -> None:
    cost = cost_section(_pipeline())
    per = cost["per_notification"]
    assert per["firestore.writes"] == 2.0
    assert per["firestore.reads"] == 0.0
    # The worker's publish and the channel publish; the push plus the one delivery to the instance that
    # holds the user's stream (routed: not one per instance, though the scenario has 2).
    assert per["pubsub.publishes"] == 2.0
    assert per["pubsub.deliveries"] == 2.0
    assert cost["per_connection"] == {"firestore.reads": 2.0, "firestore.writes": 1.0, "firestore.deletes": 1.0}
    assert cost["per_instance_heartbeat"]["firestore.writes"] == 1.0
    monthly = cost["monthly"]
    assert monthly["notifications"] == 10_000 * 20 * 30
    assert monthly["total_usd"] == round(sum(item["usd"] for item in monthly["items"]), 2)
    assert monthly["total_usd"] > 0


def test_a_failed_pipeline_yields_no_costs() -> None:
    assert "error" in cost_section({"error": "emulators did not start"})
