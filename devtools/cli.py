"""notifyctl: publish a content event as a worker would, or mint a development token.

    python -m devtools.cli publish --user u1 --type content_generation.completed \\
        --title "Video ready!" --message "Your video is ready" --request req_1
    python -m devtools.cli token --user u1 --ttl 3600

Publishing goes to the emulator when PUBSUB_EMULATOR_HOST is set, otherwise to
real Pub/Sub in GOOGLE_CLOUD_PROJECT with the caller's credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.config import load_settings
from shared.events import EVENT_TYPES
from shared.tokens import load_token_settings, mint_token


def build_event(args: argparse.Namespace) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_type": args.type,
        "user_id": args.user,
        "title": args.title,
        "message": args.message,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    if args.request:
        event["content_request_id"] = args.request
    if args.progress is not None:
        event["progress_percentage"] = args.progress
    if args.metadata:
        event["metadata"] = json.loads(args.metadata)
    if args.event_id:
        event["event_id"] = args.event_id
    return event


def publish_event(
    project_id: str, topic: str, event: dict[str, Any] | bytes, timeout: float = 30.0, **attributes: str
) -> str:
    """Publish one content event; returns the Pub/Sub message id."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher = pubsub_v1.PublisherClient()
    try:
        data = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        return str(publisher.publish(f"projects/{project_id}/topics/{topic}", data, **attributes).result(timeout))
    finally:
        publisher.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notifyctl", description=__doc__.split("\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="publish a content event to CONTENT_EVENTS_TOPIC")
    publish.add_argument("--user", required=True)
    publish.add_argument("--type", default="content_generation.completed", choices=sorted(EVENT_TYPES))
    publish.add_argument("--title", default="Video ready!")
    publish.add_argument("--message", default="Your video is ready to watch.")
    publish.add_argument("--request", help="content_request_id")
    publish.add_argument("--progress", type=int, help="progress_percentage 0-100")
    publish.add_argument("--metadata", help="a JSON object")
    publish.add_argument("--event-id", help="idempotency key (default: the Pub/Sub message id)")
    token = commands.add_parser("token", help="mint a development access token (HS256 with JWT_SECRET)")
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if args.command == "token":
        tokens = load_token_settings(os.environ)
        sys.stdout.write(mint_token(args.user, tokens, ttl_seconds=args.ttl) + "\n")
        return 0
    settings = load_settings()
    message_id = publish_event(settings.project_id, settings.content_events_topic, build_event(args))
    sys.stdout.write(json.dumps({"message_id": message_id, "topic": settings.content_events_topic}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
