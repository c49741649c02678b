"""Replay dead-lettered content events after the cause is fixed (runbook: docs/operations.md).

    python -m ops.replay_dead_letters --project P [--limit 100] [--match TEXT] [--dry-run]

Pulls from the dead-letter inspection subscription, republishes each message to
CONTENT_EVENTS_TOPIC without the ``error`` / ``original_message_id`` attributes
ingest added, and acknowledges it once the publish succeeded. A message whose
``error`` does not contain ``--match`` is left alone (its lease is released so
it stays for later). A dead letter that ingest had to trim to fit Pub/Sub's
limits (attribute ``trimmed``: part of its body or some attributes are not in
it) is always left: republishing it would not be the event the worker sent.

Idempotency: an event without ``event_id`` was keyed by its original Pub/Sub
message id; the replay writes that id into the body as ``event_id``, so an event
that had in fact been stored before it was given up is not stored twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SUBSCRIPTION = "content-generation-events-dead-letter-inspect"
DEFAULT_TOPIC = "content-generation-events"
_ADDED = {"error", "original_message_id", "trimmed"}


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: int = 0


def replay_body(data: bytes, attributes: dict[str, str]) -> bytes:
    """The body to republish: unchanged, except for the event_id an id-less event was keyed by."""
    original = attributes.get("original_message_id")
    if not original:
        return data
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data
    if isinstance(event, dict) and not event.get("event_id"):
        event["event_id"] = original
        return json.dumps(event, ensure_ascii=False).encode("utf-8")
    return data


def replay(
    subscriber: Any,
    publisher: Any,
    subscription: str,
    topic: str,
    *,
    limit: int,
    match: str | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    result = ReplayResult()
    left: set[str] = set()
    while result.replayed + result.skipped < limit:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": min(100, limit - result.replayed - result.skipped)},
            timeout=10,
        )
        if not response.received_messages:
            break
        done, keep = [], []
        new = 0
        for received in response.received_messages:
            message = received.message
            attributes = dict(message.attributes)
            trimmed = attributes.get("trimmed")
            if (match and match not in attributes.get("error", "")) or dry_run or trimmed:
                keep.append(received.ack_id)
                if message.message_id not in left:
                    left.add(message.message_id)
                    new += 1
                    result.skipped += 1
                    verb = "would replay" if dry_run and not trimmed else "leave"
                    note = f" (trimmed, replay by hand: {trimmed})" if trimmed else ""
                    print(f"{verb} {message.message_id}: {attributes.get('error', '')}{note}")
                continue
            new += 1
            clean = {k: v for k, v in attributes.items() if k not in _ADDED}
            publisher.publish(topic, replay_body(message.data, attributes), **clean).result(timeout=30)
            done.append(received.ack_id)
            result.replayed += 1
        if done:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": done})
        if keep:
            # Release at once: they stay on the subscription for inspection.
            subscriber.modify_ack_deadline(
                request={"subscription": subscription, "ack_ids": keep, "ack_deadline_seconds": 0}
            )
        if new == 0:
            break  # only messages already left: pulling again would return the same ones
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"), required=False)
    parser.add_argument("--subscription", default=DEFAULT_SUBSCRIPTION)
    parser.add_argument("--topic", default=os.environ.get("CONTENT_EVENTS_TOPIC", DEFAULT_TOPIC))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--match", help="replay only messages whose error attribute contains this text")
    parser.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
    args = parser.parse_args(argv)
    if not args.project:
        parser.error("--project is required (or GOOGLE_CLOUD_PROJECT)")
    if args.limit < 1:
        parser.error("--limit must be at least 1")

    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    try:
        result = replay(
            subscriber,
            publisher,
            f"projects/{args.project}/subscriptions/{args.subscription}",
            f"projects/{args.project}/topics/{args.topic}",
            limit=args.limit,
            match=args.match,
            dry_run=args.dry_run,
        )
    finally:
        subscriber.close()
        publisher.stop()
    print(f"replayed {result.replayed}, left {result.skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
