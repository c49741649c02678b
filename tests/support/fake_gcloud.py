"""What the stand-in ``gcloud`` (and ``curl``) answers, instead of touching Google Cloud.

tests/support/fake_cloud.py puts a small client of these answers on PATH and
records every call. With FAKE_GCLOUD_MODE=missing, ``describe`` fails as
NOT_FOUND and ``list`` finds nothing; with ``present`` both find what deploy.sh
looks for.

Cloud Run revisions (``run services describe``, ``run revisions list``): every
service has the revisions of $FAKE_GCLOUD_REVISIONS, a JSON list of
{"suffix", "ready", "percent"} oldest first (default: three Ready revisions,
the newest serving everything), named SERVICE-SUFFIX.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


def _composite_indexes(env: Mapping[str, str]) -> str:
    path = Path(env["FAKE_GCLOUD_INDEXES"])
    found = []
    for n, index in enumerate(json.loads(path.read_text()).get("indexes", [])):
        fields = [dict(f) for f in index["fields"]] + [{"fieldPath": "__name__", "order": "ASCENDING"}]
        found.append(
            {
                "name": f"projects/p/databases/(default)/collectionGroups/{index['collectionGroup']}/indexes/i{n}",
                "queryScope": index.get("queryScope", "COLLECTION"),
                "fields": fields,
                "state": "READY",
            }
        )
    return json.dumps(found)


def _field(env: Mapping[str, str], group: str, field: str) -> dict[str, object]:
    """The field as the Admin API describes it once deploy.sh configured it as the file says."""
    path = Path(env["FAKE_GCLOUD_INDEXES"])
    wanted = [{"order": "ASCENDING", "queryScope": s} for s in ("COLLECTION", "COLLECTION_GROUP")]
    for override in json.loads(path.read_text()).get("fieldOverrides", []):
        if (override["collectionGroup"], override["fieldPath"]) == (group, field) and "indexes" in override:
            wanted = override["indexes"]
    indexes = [
        {"queryScope": i["queryScope"], "fields": [{"fieldPath": field, "order": i["order"]}], "state": "READY"}
        for i in wanted
    ]
    config: dict[str, object] = {"indexes": indexes} if indexes else {}
    return {
        "name": f"projects/p/databases/(default)/collectionGroups/{group}/fields/{field}",
        "indexConfig": config,
        "ttlConfig": {"state": "ACTIVE"},
    }


DEFAULT_REVISIONS = [
    {"suffix": "00001-aaa", "ready": True, "percent": 0},
    {"suffix": "00002-bbb", "ready": True, "percent": 0},
    {"suffix": "00003-ccc", "ready": True, "percent": 100},
]


def _revisions(env: Mapping[str, str], service: str) -> list[dict[str, object]]:
    """The service's revisions as ``gcloud run revisions list --format=json`` prints them."""
    spec = json.loads(env.get("FAKE_GCLOUD_REVISIONS") or json.dumps(DEFAULT_REVISIONS))
    return [
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {
                "name": f"{service}-{item['suffix']}",
                # Listed newest first like gcloud, with distinct creation times.
                "creationTimestamp": f"2026-11-{10 + n:02d}T10:00:00.000000Z",
                "labels": {"serving.knative.dev/service": service},
            },
            "status": {"conditions": [{"type": "Ready", "status": "True" if item["ready"] else "False"}]},
        }
        for n, item in reversed(list(enumerate(spec)))
    ]


def _service(env: Mapping[str, str], service: str) -> dict[str, object]:
    spec = json.loads(env.get("FAKE_GCLOUD_REVISIONS") or json.dumps(DEFAULT_REVISIONS))
    traffic = [
        {"revisionName": f"{service}-{item['suffix']}", "percent": item["percent"]} for item in spec if item["percent"]
    ]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": service},
        "status": {"traffic": traffic},
    }


def _gcloud(env: Mapping[str, str], argv: list[str], present: bool) -> tuple[int, str]:
    words = [a for a in argv if not a.startswith("-")]
    fmt = next((a.split("=", 1)[1] for a in argv if a.startswith("--format=")), "")
    if words[:2] == ["auth", "print-access-token"]:
        return 0, "fake-access-token"
    if words[:2] == ["functions", "describe"] and "serviceConfig.uri" in fmt:
        return 0, "https://notifications-cleanup-fake.a.run.app"
    if "describe" in words:
        if not present:
            return 1, ""
        if words[:3] == ["run", "services", "describe"]:
            return 0, json.dumps(_service(env, words[3]))
        if words[:3] == ["firestore", "indexes", "fields"]:
            if "ttlConfig.state" in fmt:
                return 0, "ACTIVE"
            field = words[words.index("describe") + 1]
            group = next(a.split("=", 1)[1] for a in argv if a.startswith("--collection-group="))
            return 0, json.dumps(_field(env, group, field))
        return 0, "{}"
    if "list" in words:
        if words[:2] == ["services", "list"]:
            return 0, env.get("FAKE_GCLOUD_APIS", "").replace(",", "\n") if present else ""
        if words[:3] == ["firestore", "indexes", "composite"]:
            return 0, _composite_indexes(env) if present else "[]"
        if "policies" in words:
            return 0, "projects/p/alertPolicies/123" if present else ""
        if words[:3] == ["monitoring", "dashboards", "list"]:
            return 0, "projects/p/dashboards/d-42\tetag-7" if present else ""
        if words[:3] == ["run", "revisions", "list"]:
            service = next(a.split("=", 1)[1] for a in argv if a.startswith("--service="))
            return 0, json.dumps(_revisions(env, service)) if present else "[]"
        return 0, ""
    return 0, ""


def answer(env: Mapping[str, str], tool: str, argv: list[str]) -> tuple[int, str]:
    """The exit status and standard output of ``tool argv`` in a deploy.sh run with environment ``env``."""
    if tool == "curl":
        return 0, ""
    return _gcloud(env, argv, env.get("FAKE_GCLOUD_MODE") == "present")
