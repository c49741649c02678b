"""Which revision a rollback returns to (deploy.sh rollback); standard library only.

    SERVICE_JSON="$(gcloud run services describe S --format=json)" \\
        python3 ops/revisions.py previous < <(gcloud run revisions list --service=S --format=json)

Prints the name of the newest Ready revision created before the one that serves
most of the traffic now, or exits 1 with the reason. The functions are gen2:
each is a Cloud Run service of the same name, so the same answer serves them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any


class NoPrevious(Exception):
    """There is nothing to roll back to."""


def _name(resource: dict[str, Any]) -> str:
    return str(resource.get("metadata", {}).get("name", ""))


def _created(revision: dict[str, Any]) -> datetime:
    stamp = str(revision.get("metadata", {}).get("creationTimestamp", ""))
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _ready(revision: dict[str, Any]) -> bool:
    conditions = revision.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serving(service: dict[str, Any]) -> str:
    """The revision with the largest share of the traffic (the newest such on a tie)."""
    traffic = [t for t in service.get("status", {}).get("traffic", []) if t.get("percent") and t.get("revisionName")]
    if not traffic:
        raise NoPrevious(f"{_name(service) or 'the service'} serves no revision")
    return str(max(traffic, key=lambda t: (int(t["percent"]), str(t["revisionName"])))["revisionName"])


def previous(service: dict[str, Any], revisions: list[dict[str, Any]]) -> str:
    current = serving(service)
    by_name = {_name(r): r for r in revisions}
    if current not in by_name:
        raise NoPrevious(f"the serving revision {current} is not in the revision list")
    since = _created(by_name[current])
    older = [r for r in revisions if _ready(r) and _created(r) < since]
    if not older:
        raise NoPrevious(f"no Ready revision older than {current}: nothing to roll back to")
    return _name(max(older, key=_created))


def main(argv: list[str]) -> int:
    if argv[1:] != ["previous"]:
        print("usage: SERVICE_JSON=... ops/revisions.py previous < revisions.json", file=sys.stderr)
        return 2
    try:
        print(previous(json.loads(os.environ["SERVICE_JSON"]), json.load(sys.stdin)))
    except NoPrevious as exc:
        print(f"deploy.sh: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
