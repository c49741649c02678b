"""Turn firestore.indexes.json (Firebase CLI format) into what deploy.sh applies.

Standard library only: deploy.sh runs it on any machine with python3.

  composite FILE            stdin: `gcloud firestore indexes composite list --format=json`;
                            prints one line of gcloud flags per composite index still missing
  ttl FILE                  prints "group<TAB>field" per TTL policy
  overrides FILE            prints "group<TAB>field" per single-field override (an empty
                            index list exempts the field from indexing)
  override-plan FILE DESCRIBED [BODIES]
                            DESCRIBED holds G.F.json, `gcloud firestore indexes fields describe F
                            --format=json` of each override; prints "group<TAB>field" per field
                            without exactly the wanted indexes, and writes each one's Admin API
                            body (PATCH ...fields/F?updateMask=indexConfig) into BODIES

Cleanup's collection-group queries on ``expire_at`` need single-field indexes
with collection-group scope, which Firestore does not create by default; they
are applied even when the file does not list them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# (collection group, field) -> indexes cleanup's expiry pass needs.
REQUIRED_OVERRIDES: dict[tuple[str, str], list[dict[str, str]]] = {
    (group, "expire_at"): [
        {"order": "ASCENDING", "queryScope": "COLLECTION"},
        {"order": "ASCENDING", "queryScope": "COLLECTION_GROUP"},
    ]
    for group in ("notifications", "event_keys")
}


# Collection groups whose expire_at the code sets and relies on a TTL policy for.
REQUIRED_TTL = {
    (group, "expire_at")
    for group in ("notifications", "event_keys", "stream_instances", "cleanup_orphan_subscriptions", "stream_tickets")
}


def _load(path: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object with 'indexes' / 'fieldOverrides'")
    return data


def _index_key(group: str, scope: str, fields: list[dict[str, Any]]) -> tuple[Any, ...]:
    parts = []
    for field in fields:
        path = field.get("fieldPath")
        if path == "__name__":
            continue  # Firestore appends it to every composite index it reports
        mode = field.get("order") or ("CONTAINS" if field.get("arrayConfig") else "")
        parts.append((path, str(mode).upper()))
    return (group, scope.upper(), tuple(parts))


def composite(path: str, existing_json: str) -> list[str]:
    wanted = _load(path).get("indexes", [])
    existing = json.loads(existing_json or "[]") or []
    have = set()
    for index in existing:
        # name: projects/P/databases/D/collectionGroups/G/indexes/ID
        group = str(index.get("name", "")).split("/collectionGroups/")[-1].split("/")[0]
        have.add(_index_key(group, index.get("queryScope", "COLLECTION"), index.get("fields", [])))
    lines = []
    for index in wanted:
        group = index["collectionGroup"]
        scope = index.get("queryScope", "COLLECTION")
        if _index_key(group, scope, index["fields"]) in have:
            continue
        flags = [f"--collection-group={group}", f"--query-scope={scope.lower().replace('_', '-')}"]
        for field in index["fields"]:
            if field.get("arrayConfig"):
                flags.append(f"--field-config=field-path={field['fieldPath']},array-config=contains")
            else:
                flags.append(f"--field-config=field-path={field['fieldPath']},order={field['order'].lower()}")
        lines.append(" ".join(flags))
    return lines


def overrides(path: str) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Every single-field override: the file's (an empty list exempts the field from indexing) plus cleanup's."""
    wanted = dict(REQUIRED_OVERRIDES)
    for override in _load(path).get("fieldOverrides", []):
        if "indexes" in override:
            wanted[(override["collectionGroup"], override["fieldPath"])] = list(override["indexes"])
    return wanted


def ttl_fields(path: str) -> list[tuple[str, str]]:
    """(collection group, field) pairs with a TTL policy: the file's plus the ones the code relies on."""
    found = set(REQUIRED_TTL)
    for override in _load(path).get("fieldOverrides", []):
        if override.get("ttl"):
            found.add((override["collectionGroup"], override["fieldPath"]))
    return sorted(found)


def override_present(path: str, group: str, field: str, described_json: str) -> bool:
    """True when the field's index configuration is exactly the wanted one (not inherited)."""
    wanted = overrides(path).get((group, field), [])
    described = json.loads(described_json or "{}") or {}
    config = described.get("indexConfig")
    if not isinstance(config, dict) or config.get("usesAncestorConfig"):
        return False
    have = {
        _index_key(group, index.get("queryScope", "COLLECTION"), index.get("fields", []))
        for index in config.get("indexes", [])
    }
    want = {_index_key(group, i["queryScope"], [{"fieldPath": field, **i}]) for i in wanted}
    return have == want


def override_body(path: str, group: str, field: str) -> dict[str, Any]:
    indexes = []
    for index in overrides(path)[(group, field)]:
        spec: dict[str, Any] = {"fieldPath": field}
        if index.get("arrayConfig"):
            spec["arrayConfig"] = index["arrayConfig"]
        else:
            spec["order"] = index["order"]
        indexes.append({"queryScope": index["queryScope"], "fields": [spec]})
    return {"indexConfig": {"indexes": indexes}}


def override_plan(path: str, described_dir: str, body_dir: str | None) -> list[tuple[str, str]]:
    """The overrides whose described state (``{group}.{field}.json`` in ``described_dir``) is not the wanted
    one; with ``body_dir``, each one's request body is written there as ``field-{group}-{field}.json``."""
    needed = []
    for group, field in sorted(overrides(path)):
        described = Path(described_dir, f"{group}.{field}.json")
        text = described.read_text() if described.exists() else ""
        if override_present(path, group, field, text.strip()):
            continue
        needed.append((group, field))
        if body_dir is not None:
            Path(body_dir, f"field-{group}-{field}.json").write_text(json.dumps(override_body(path, group, field)))
    return needed


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    command, path = argv[0], argv[1]
    if command == "composite":
        print("\n".join(composite(path, sys.stdin.read())))
    elif command == "ttl":
        print("\n".join(f"{g}\t{f}" for g, f in ttl_fields(path)))
    elif command == "overrides":
        print("\n".join(f"{g}\t{f}" for g, f in sorted(overrides(path))))
    elif command == "override-plan":
        needed = override_plan(path, argv[2], argv[3] if len(argv) > 3 else None)
        print("\n".join(f"{g}\t{f}" for g, f in needed))
    else:
        raise SystemExit(f"unknown command {command!r}\n{__doc__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
