"""ops/firestore_indexes.py: what deploy.sh applies from firestore.indexes.json, and what it skips."""

from __future__ import annotations

import json
from pathlib import Path

from ops.firestore_indexes import REQUIRED_TTL, composite, override_body, override_present, overrides, ttl_fields

FILE = {
    "indexes": [
        {
            "collectionGroup": "notifications",
            "queryScope": "COLLECTION",
            "fields": [{"fieldPath": "read", "order": "ASCENDING"}, {"fieldPath": "id", "order": "DESCENDING"}],
        }
    ],
    "fieldOverrides": [
        {"collectionGroup": "notifications", "fieldPath": "title", "indexes": []},
        {"collectionGroup": "stream_instances", "fieldPath": "expire_at", "ttl": True, "indexes": []},
    ],
}


def write(tmp_path: Path) -> str:
    path = tmp_path / "firestore.indexes.json"
    path.write_text(json.dumps(FILE))
    return str(path)


def test_composite_skips_indexes_firestore_reports_with_name_appended(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert composite(path, "[]") == [
        "--collection-group=notifications --query-scope=collection "
        "--field-config=field-path=read,order=ascending --field-config=field-path=id,order=descending"
    ]
    reported = {
        "name": "projects/p/databases/(default)/collectionGroups/notifications/indexes/abc",
        "queryScope": "COLLECTION",
        "fields": [
            {"fieldPath": "read", "order": "ASCENDING"},
            {"fieldPath": "id", "order": "DESCENDING"},
            {"fieldPath": "__name__", "order": "DESCENDING"},
        ],
    }
    assert composite(path, json.dumps([reported])) == []


def test_cleanups_collection_group_indexes_and_ttls_are_always_applied(tmp_path: Path) -> None:
    path = write(tmp_path)
    wanted = overrides(path)
    assert ("notifications", "expire_at") in wanted and ("event_keys", "expire_at") in wanted
    assert wanted[("notifications", "title")] == []
    assert set(ttl_fields(path)) == REQUIRED_TTL | {("stream_instances", "expire_at")}
    body = override_body(path, "event_keys", "expire_at")
    assert {"queryScope": "COLLECTION_GROUP", "fields": [{"fieldPath": "expire_at", "order": "ASCENDING"}]} in body[
        "indexConfig"
    ]["indexes"]
    assert override_body(path, "notifications", "title") == {"indexConfig": {"indexes": []}}


def test_an_override_is_present_only_when_exactly_configured(tmp_path: Path) -> None:
    path = write(tmp_path)
    inherited = {"indexConfig": {"usesAncestorConfig": True, "indexes": [{"queryScope": "COLLECTION"}]}}
    assert not override_present(path, "notifications", "title", json.dumps(inherited))
    assert override_present(path, "notifications", "title", json.dumps({"indexConfig": {}}))
    partial = {
        "indexConfig": {
            "indexes": [{"queryScope": "COLLECTION", "fields": [{"fieldPath": "expire_at", "order": "ASCENDING"}]}]
        }
    }
    assert not override_present(path, "notifications", "expire_at", json.dumps(partial))
    partial["indexConfig"]["indexes"].append(  # type: ignore[attr-defined]
        {"queryScope": "COLLECTION_GROUP", "fields": [{"fieldPath": "expire_at", "order": "ASCENDING"}]}
    )
    assert override_present(path, "notifications", "expire_at", json.dumps(partial))
    assert not override_present(path, "notifications", "expire_at", "{}")
