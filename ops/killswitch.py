"""Flip the notifications kill switch (runbook: docs/operations.md, section Kill switch).

    python -m ops.killswitch --project P status
    python -m ops.killswitch --project P off --reason "bad worker release" [--only ingest|streams]
    python -m ops.killswitch --project P on [--only ingest|streams]

Writes the Firestore document ``config/notifications`` (shared/killswitch.py);
every ingest and stream instance applies it within KILLSWITCH_CACHE_SECONDS
(default 5 s), without a redeploy. ``off`` without ``--only`` turns off both:
ingest parks events on the dead-letter topic, the stream service refuses new
streams with a 503. Prints the document as it is afterwards.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.killswitch import SWITCHES, SwitchDocument, Switches


def flip(document: SwitchDocument, enabled: bool, only: str | None, reason: str, by: str) -> Switches:
    """Turn ``only`` (or every switch) on or off; returns the switches as the document now says."""
    names = [only] if only else list(SWITCHES)
    fields: dict[str, Any] = {f"{name}_enabled": enabled for name in names}
    fields["updated_at"] = datetime.now(UTC)
    fields["updated_by"] = by
    if not enabled:
        fields["reason"] = reason
    else:
        after = Switches.from_document({**(document.read() or {}), **fields})
        if after.ingest_enabled and after.streams_enabled:
            fields["reason"] = ""  # everything back on: an old reason would only mislead
    document.write(fields)
    return Switches.from_document(document.read())


def _printable(data: Mapping[str, Any] | None) -> str:
    return json.dumps(data or {}, default=str, sort_keys=True)


def main(argv: Sequence[str] | None = None, document: SwitchDocument | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    parser.add_argument("action", choices=("status", "on", "off"))
    parser.add_argument("--only", choices=SWITCHES, help="flip one switch; default both")
    parser.add_argument("--reason", default="", help="why (shown in the stream's 503 and the logs)")
    parser.add_argument("--by", default=os.environ.get("USER") or getpass.getuser(), help="who (recorded)")
    args = parser.parse_args(argv)
    if document is None:
        if not args.project:
            parser.error("--project is required (or GOOGLE_CLOUD_PROJECT)")
        from google.cloud import firestore

        from shared.backends.firestore_config import FirestoreSwitchDocument

        client = firestore.Client(project=args.project)
        document = FirestoreSwitchDocument(lambda: client)
    if args.action == "off" and not args.reason.strip():
        parser.error("off needs --reason: it is what operators and clients are told")
    if args.action != "status":
        flip(document, args.action == "on", args.only, args.reason.strip(), args.by)
    data = document.read()
    print(f"{Switches.from_document(data).describe()} {_printable(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
