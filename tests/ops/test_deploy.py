"""deploy.sh against a stand-in gcloud: every resource, the flags that matter, idempotency, dry run, shellcheck."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from tests.support import ROOT
from tests.support.fake_cloud import PROJECT, REGION, DeployRun, FakeCloud, deploy_apis, flag

SA = {
    name: f"{name}@{PROJECT}.iam.gserviceaccount.com"
    for name in ("notif-ingest", "notif-ingest-trigger", "notif-stream", "notif-cleanup", "notif-scheduler")
}


def gcloud_calls(run: DeployRun) -> list[list[str]]:
    return [c.argv for c in run.calls if c.tool == "gcloud"]


def test_first_run_creates_every_resource_with_the_flags_that_matter(cloud: FakeCloud, tmp_path: Path) -> None:
    secret_value = "s3cret-value-that-must-never-be-on-a-command-line-0123456789"
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(secret_value)

    run = cloud.first_run(secret_file)

    everything = "\n".join(c.line for c in run.calls)
    assert secret_value not in everything and secret_value not in run.result.stdout + run.result.stderr
    for argv in gcloud_calls(run):
        if argv[:2] != ["auth", "print-access-token"]:
            assert f"--project={PROJECT}" in argv, argv

    # APIs, topics, the dead-letter subscription kept a week.
    enable = run.one("services", "enable")
    assert set(deploy_apis()) <= set(enable.argv)
    for topic in ("content-generation-events", "content-generation-events-dead-letter", "user-notifications"):
        run.one("pubsub", "topics", "create", topic)
    dlq = run.one("pubsub", "subscriptions", "create")
    assert flag(dlq, "topic") == "content-generation-events-dead-letter"
    assert flag(dlq, "message-retention-duration") == "7d" and flag(dlq, "expiration-period") == "never"

    # Firestore: database, TTL on expire_at, composite indexes, collection-group expire_at indexes.
    run.one("firestore", "databases", "create")
    ttl = run.find("ttls", "update", "expire_at", "--enable-ttl")
    assert not any(c.has("--async") for c in ttl), "TTL must be done before the same field's index override"
    ttl_groups = {flag(c, "collection-group") for c in ttl}
    assert ttl_groups == {
        "notifications",
        "event_keys",
        "stream_instances",
        "cleanup_orphan_subscriptions",
        "stream_tickets",
        "changes",
        "broadcasts",
        "broadcast_keys",
    }
    wanted = json.loads(cloud.indexes.read_text())["indexes"]
    composite = run.find("firestore", "indexes", "composite", "create")
    assert len(composite) == len(wanted) > 0
    first = wanted[0]
    assert any(
        flag(c, "collection-group") == first["collectionGroup"]
        and [a for a in c.argv if a.startswith("--field-config=")]
        == [f"--field-config=field-path={f['fieldPath']},order={f['order'].lower()}" for f in first["fields"]]
        for c in composite
    )
    bodies = {}
    for patch in (c for c in run.calls if c.tool == "curl"):
        assert "fake-access-token" not in " ".join(patch.argv) and patch.has("-H", "@-") and patch.stdin_bytes > 0
        assert patch.has("-X", "PATCH") and patch.argv[-1].endswith("?updateMask=indexConfig")
        where = patch.argv[-1].split("/collectionGroups/")[1].split("?")[0]  # G/fields/F
        bodies[where] = json.loads(Path(patch.argv[patch.argv.index("--data-binary") + 1][1:]).read_text())
    for group in ("notifications", "event_keys"):
        indexes = bodies[f"{group}/fields/expire_at"]["indexConfig"]["indexes"]
        assert {
            "queryScope": "COLLECTION_GROUP",
            "fields": [{"fieldPath": "expire_at", "order": "ASCENDING"}],
        } in indexes
    for override in json.loads(cloud.indexes.read_text()).get("fieldOverrides", []):
        body = bodies[f"{override['collectionGroup']}/fields/{override['fieldPath']}"]
        assert len(body["indexConfig"]["indexes"]) == len(override["indexes"]), override

    # The JWT secret: created from the file, mounted from Secret Manager on the stream service only.
    secret = run.one("secrets", "create", "notifications-jwt-secret")
    assert flag(secret, "data-file") == str(secret_file)
    accessor = run.one("secrets", "add-iam-policy-binding")
    assert flag(accessor, "member") == f"serviceAccount:{SA['notif-stream']}"

    # One service account per function, least-privilege roles.
    for name in SA:
        run.one("iam", "service-accounts", "create", name)
    project_roles = {
        (flag(c, "member"), flag(c, "role")) for c in run.find("projects", "add-iam-policy-binding", PROJECT)
    }
    assert project_roles == {
        (f"serviceAccount:{SA['notif-ingest']}", "roles/datastore.user"),
        (f"serviceAccount:{SA['notif-stream']}", "roles/datastore.user"),
        (f"serviceAccount:{SA['notif-stream']}", f"projects/{PROJECT}/roles/notificationsStreamSubscriptions"),
        (f"serviceAccount:{SA['notif-cleanup']}", "roles/datastore.user"),
        (f"serviceAccount:{SA['notif-cleanup']}", f"projects/{PROJECT}/roles/notificationsCleanupSubscriptions"),
        (f"serviceAccount:{SA['notif-ingest']}", "roles/pubsub.publisher"),
        (f"serviceAccount:{SA['notif-stream']}", "roles/pubsub.publisher"),
    }, "no broad project role (editor, pubsub.editor, ...) and nothing for the scheduler at project level"
    # Publishing at project level only to the stream instances' inboxes, by an IAM condition.
    for call in run.find("projects", "add-iam-policy-binding", PROJECT):
        if flag(call, "role") == "roles/pubsub.publisher":
            condition = flag(call, "condition")
            assert f'resource.name.startsWith("projects/{PROJECT}/topics/stream-instance-")' in condition
        else:
            assert flag(call, "condition") == "None"
    topic_roles = {
        (c.argv[3], flag(c, "member"), flag(c, "role")) for c in run.find("pubsub", "topics", "add-iam-policy-binding")
    }
    assert (
        "content-generation-events-dead-letter",
        f"serviceAccount:{SA['notif-ingest']}",
        "roles/pubsub.publisher",
    ) in topic_roles
    assert ("user-notifications", f"serviceAccount:{SA['notif-ingest']}", "roles/pubsub.publisher") in topic_roles
    assert ("user-notifications", f"serviceAccount:{SA['notif-stream']}", "roles/pubsub.subscriber") in topic_roles
    assert not any(t == "content-generation-events" for t, _, _ in topic_roles), "nobody of ours publishes events"
    stream_role = run.one("iam", "roles", "create", "notificationsStreamSubscriptions")
    assert "pubsub.subscriptions.create" in flag(stream_role, "permissions")
    assert {"pubsub.topics.create", "pubsub.topics.delete"} <= set(flag(stream_role, "permissions").split(","))
    cleanup_role = run.one("iam", "roles", "create", "notificationsCleanupSubscriptions")
    assert set(flag(cleanup_role, "permissions").split(",")) == {
        "pubsub.topics.list",
        "pubsub.topics.delete",
        "pubsub.subscriptions.list",
        "pubsub.subscriptions.get",
        "pubsub.subscriptions.delete",
    }

    # Ingest: gen2, Pub/Sub trigger, retry, staged source.
    ingest = run.one("functions", "deploy", "notifications-ingest")
    assert ingest.has("--gen2", "--retry")
    assert flag(ingest, "trigger-topic") == "content-generation-events"
    assert flag(ingest, "entry-point") == "ingest_content_event"
    assert flag(ingest, "service-account") == SA["notif-ingest"]
    assert flag(ingest, "source") == str(cloud.build / "ingest")
    assert "JWT_SECRET=" not in (flag(ingest, "set-env-vars") or "")
    assert f"GOOGLE_CLOUD_PROJECT={PROJECT}" in flag(ingest, "set-env-vars")
    trigger = run.one("functions", "add-invoker-policy-binding", "notifications-ingest")
    assert flag(trigger, "member") == f"serviceAccount:{SA['notif-ingest-trigger']}"

    # Stream service on Cloud Run.
    stream = run.one("run", "deploy", "notifications-stream")
    assert flag(stream, "concurrency") == "1000" and flag(stream, "timeout") == "3600"
    assert stream.has("--no-cpu-throttling") and int(flag(stream, "min-instances")) >= 1
    assert flag(stream, "set-secrets") == "JWT_SECRET=notifications-jwt-secret:latest"
    env = dict(item.split("=", 1) for item in flag(stream, "set-env-vars").split(","))
    assert "JWT_SECRET" not in env
    assert 0 < int(env["SSE_MAX_STREAM_SECONDS"]) < 3600
    assert flag(stream, "service-account") == SA["notif-stream"]
    # Probes on routes the service has, answered from memory (functions/stream/probes.py).
    routes = {
        getattr(r, "path", "")
        for r in create_app(
            load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"})
        ).routes
    }
    for name, path in (
        ("startup-probe", "/api/v1/notifications/ready"),
        ("liveness-probe", "/api/v1/notifications/live"),
    ):
        probe = dict(item.split("=", 1) for item in flag(stream, name).split(","))
        assert probe["httpGet.path"] == path and path in routes
        assert int(probe["timeoutSeconds"]) <= int(probe["periodSeconds"])
        # Startup within Cloud Run's 240 s; liveness slow to cut an instance's streams.
        budget = int(probe["periodSeconds"]) * int(probe["failureThreshold"])
        assert budget <= 240 if name == "startup-probe" else budget >= 30

    # Every deploy serves the code it deployed, even after a rollback pinned an old revision.
    for service in ("notifications-ingest", "notifications-stream", "notifications-cleanup"):
        latest = run.one("run", "services", "update-traffic", service, "--to-latest")
        deployed = next(c for c in run.calls if c.has("deploy", service))
        assert run.calls.index(latest) > run.calls.index(deployed)
        assert flag(latest, "region") == REGION

    # Cleanup: private, invoked by the scheduler's identity only, every 5 minutes with OIDC.
    cleanup = run.one("functions", "deploy", "notifications-cleanup")
    assert cleanup.has("--gen2", "--trigger-http", "--no-allow-unauthenticated")
    assert not cleanup.has("--allow-unauthenticated")
    assert flag(cleanup, "entry-point") == "cleanup" and flag(cleanup, "service-account") == SA["notif-cleanup"]
    invoker = run.one("functions", "add-invoker-policy-binding", "notifications-cleanup")
    assert flag(invoker, "member") == f"serviceAccount:{SA['notif-scheduler']}"
    job = run.one("scheduler", "jobs", "create", "http")
    assert flag(job, "schedule") == "*/5 * * * *"
    assert flag(job, "oidc-service-account-email") == SA["notif-scheduler"]
    assert flag(job, "uri").startswith("https://notifications-cleanup-fake.a.run.app")
    assert flag(job, "oidc-token-audience") == "https://notifications-cleanup-fake.a.run.app"

    # Monitoring: every metric and alert file applied.
    metrics = {c.argv[3] for c in run.find("logging", "metrics", "create")}
    assert metrics == {p.stem for p in (ROOT / "ops" / "metrics").glob("*.yaml")}
    policies = {flag(c, "policy-from-file") for c in run.find("monitoring", "policies", "create")}
    assert policies == {str(p) for p in (ROOT / "ops" / "alerts").glob("*.yaml")}
    dashboard = run.one("monitoring", "dashboards", "create")
    assert flag(dashboard, "config-from-file") == str(ROOT / "ops" / "dashboards" / "notifications.json")


def test_the_staged_folders_hold_main_shared_and_requirements(first_deploy: tuple[FakeCloud, DeployRun]) -> None:
    cloud, _ = first_deploy
    for name in ("ingest", "cleanup"):
        folder = cloud.build / name
        assert (folder / "main.py").read_text() == (ROOT / "functions" / name / "main.py").read_text()
        assert (folder / "shared" / "config.py").exists() and (folder / "requirements.txt").exists()
        assert not list(folder.rglob("__pycache__"))
    stream = cloud.build / "stream"
    assert (stream / "functions" / "stream" / "main.py").exists() and (stream / "shared").is_dir()
    assert (stream / "Procfile").read_text().startswith("web: python -m functions.stream.serve")


def test_a_generated_secret_goes_through_stdin(first_deploy: tuple[FakeCloud, DeployRun]) -> None:
    _, run = first_deploy
    secret = run.one("secrets", "create", "notifications-jwt-secret")
    assert flag(secret, "data-file") == "-" and secret.stdin_bytes >= 32


def test_a_second_run_creates_nothing(cloud: FakeCloud) -> None:
    run = cloud.run("--project", PROJECT, "--region", REGION, mode="present")
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    created = [c.line for c in run.calls if "create" in c.argv]
    assert created == []
    assert run.find("services", "enable") == [] and run.find("ttls", "update") == []
    assert [c for c in run.calls if c.tool == "curl"] == []
    # Code is redeployed and configuration reconciled, in place.
    assert len(run.find("functions", "deploy")) == 2 and len(run.find("run", "deploy")) == 1
    run.one("scheduler", "jobs", "update", "http")
    assert len(run.find("logging", "metrics", "update")) == len(list((ROOT / "ops" / "metrics").glob("*.yaml")))
    assert len(run.find("monitoring", "policies", "update")) == len(list((ROOT / "ops" / "alerts").glob("*.yaml")))
    # The dashboard is updated in place, with the etag the listing gave.
    update = run.one("monitoring", "dashboards", "update", "projects/p/dashboards/d-42")
    sent = json.loads(Path(flag(update, "config-from-file")).read_text())
    committed = json.loads((ROOT / "ops" / "dashboards" / "notifications.json").read_text())
    assert sent == {**committed, "etag": "etag-7"}


def test_dry_run_prints_every_command_and_runs_none(cloud: FakeCloud) -> None:
    run = cloud.run("--project", PROJECT, "--region", REGION, "--dry-run", mode="present")
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.calls == [], "nothing may run in a dry run"
    assert not cloud.build.exists(), "a dry run stages nothing"
    printed = run.result.stdout
    for needle in (
        "gcloud services enable",
        "gcloud pubsub topics create content-generation-events",
        "gcloud firestore fields ttls update expire_at",
        "gcloud functions deploy notifications-ingest",
        "gcloud run deploy notifications-stream",
        "gcloud functions deploy notifications-cleanup",
        "gcloud scheduler jobs create http notifications-cleanup-every-5m",
        "gcloud logging metrics create",
        "gcloud alpha monitoring policies create",
        "gcloud monitoring dashboards create",
        "gcloud run services update-traffic notifications-stream",
    ):
        assert needle in printed, needle


def test_components_can_be_deployed_alone(cloud: FakeCloud) -> None:
    run = cloud.run("--project", PROJECT, "cleanup", mode="missing")
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.find("functions", "deploy", "notifications-cleanup")
    assert not run.find("run", "deploy") and not run.find("pubsub", "topics", "create")


def test_bad_arguments_are_refused_clearly(cloud: FakeCloud) -> None:
    unknown = cloud.run("--project", PROJECT, "everything")
    assert unknown.result.returncode == 2 and "unknown argument: everything" in unknown.result.stderr
    no_project = cloud.run("infra")
    assert no_project.result.returncode == 2 and "--project is required" in no_project.result.stderr
    assert unknown.calls == [] and no_project.calls == []


def test_shellcheck_passes_on_deploy_sh() -> None:
    if shutil.which("shellcheck") is None:
        message = "shellcheck is missing: devtools/system-packages.sh installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        ["shellcheck", "deploy.sh", "devtools/system-packages.sh", ".ci/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_monitoring_files_are_valid_and_alerts_use_defined_metrics() -> None:
    metric_names = set()
    for path in (ROOT / "ops" / "metrics").glob("*.yaml"):
        metric = yaml.safe_load(path.read_text())
        assert metric["filter"] and metric["metricDescriptor"]["metricKind"] == "DELTA", path
        if metric["metricDescriptor"]["valueType"] == "DISTRIBUTION":
            assert metric["valueExtractor"].startswith("EXTRACT(") and "bucketOptions" in metric, path
        metric_names.add(path.stem)
    assert len(metric_names) >= 4
    displays = set()
    for path in (ROOT / "ops" / "alerts").glob("*.yaml"):
        policy = yaml.safe_load(path.read_text())
        displays.add(policy["displayName"])
        assert "docs/operations.md" in policy["documentation"]["content"], path
        for condition in policy["conditions"]:
            if "conditionPrometheusQueryLanguage" in condition:
                continue  # PromQL: parsed and checked in test_slos_and_dashboard.py
            threshold = condition["conditionThreshold"]
            assert threshold["comparison"].startswith("COMPARISON_") and threshold["aggregations"], path
            for used in threshold["filter"].split('metric.type="logging.googleapis.com/user/')[1:]:
                assert used.split('"', 1)[0] in metric_names, f"{path} uses an undefined log-based metric"
    assert len(displays) == len(list((ROOT / "ops" / "alerts").glob("*.yaml"))), "display names are the policies' keys"
