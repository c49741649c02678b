"""deploy.sh rollback against the stand-in gcloud, and the choice of the revision it returns to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ops.revisions import NoPrevious, previous
from tests.support.fake_cloud import PROJECT, REGION, DeployRun, FakeCloud, flag

SERVICES = ("notifications-ingest", "notifications-stream", "notifications-cleanup")


def _rollback(cloud: FakeCloud, *args: str, revisions: list[dict[str, Any]] | None = None) -> DeployRun:
    env = {"FAKE_GCLOUD_REVISIONS": json.dumps(revisions)} if revisions is not None else None
    return cloud.run("--project", PROJECT, "--region", REGION, "rollback", *args, mode="present", extra_env=env)


def _changes(run: DeployRun) -> list[tuple[str, str]]:
    """(service, --to-revisions) of every traffic change the run made."""
    return [(c.argv[3], flag(c, "to-revisions")) for c in run.find("run", "services", "update-traffic")]


def test_rollback_of_one_component_sends_its_traffic_to_the_previous_revision(cloud: FakeCloud) -> None:
    run = _rollback(cloud, "stream")
    assert run.result.returncode == 0, run.result.stderr[-2000:]
    assert _changes(run) == [("notifications-stream", "notifications-stream-00002-bbb=100")]
    change = run.one("run", "services", "update-traffic")
    assert flag(change, "region") == REGION and flag(change, "project") == PROJECT
    assert not run.find("deploy"), "a rollback deploys nothing"
    assert not [c for c in run.calls if "create" in c.argv or "update" in c.argv]


def test_rollback_without_components_rolls_back_every_function_and_the_service(cloud: FakeCloud) -> None:
    run = _rollback(cloud)
    assert run.result.returncode == 0, run.result.stderr[-2000:]
    assert _changes(run) == [(s, f"{s}-00002-bbb=100") for s in SERVICES]


def _spec(*revisions: tuple[str, bool, int]) -> list[dict[str, Any]]:
    return [{"suffix": suffix, "ready": ready, "percent": percent} for suffix, ready, percent in revisions]


@pytest.mark.parametrize(
    ("component", "revisions"),
    [
        # A revision that never became Ready is skipped.
        ("ingest", _spec(("00001-aaa", True, 0), ("00002-bbb", False, 0), ("00003-ccc", True, 100))),
        # After a first rollback 00002 serves and 00003 idles: a second one goes one further back.
        ("cleanup", _spec(("00001-aaa", True, 0), ("00002-bbb", True, 100), ("00003-ccc", True, 0))),
    ],
)
def test_rollback_returns_to_the_newest_ready_revision_older_than_the_serving_one(
    cloud: FakeCloud, component: str, revisions: list[dict[str, Any]]
) -> None:
    run = _rollback(cloud, component, revisions=revisions)
    assert run.result.returncode == 0, run.result.stderr[-2000:]
    service = f"notifications-{component}"
    assert _changes(run) == [(service, f"{service}-00001-aaa=100")]


def test_nothing_older_stops_with_a_clear_error_and_changes_nothing(cloud: FakeCloud) -> None:
    run = _rollback(cloud, "stream", "ingest", revisions=_spec(("00001-aaa", True, 100)))
    assert run.result.returncode == 1
    assert "no Ready revision older than notifications-stream-00001-aaa" in run.result.stderr
    assert _changes(run) == []


def test_rollback_of_infra_or_monitoring_is_refused(cloud: FakeCloud) -> None:
    for component in ("infra", "monitoring"):
        run = _rollback(cloud, component)
        assert run.result.returncode == 2 and "rollback applies to ingest, stream and cleanup" in run.result.stderr
        assert run.calls == []


def test_a_dry_run_rollback_prints_the_traffic_change_and_runs_nothing(cloud: FakeCloud) -> None:
    run = _rollback(cloud, "--dry-run", "stream")
    assert run.result.returncode == 0, run.result.stderr[-2000:]
    assert run.calls == []
    assert "gcloud run services update-traffic notifications-stream" in run.result.stdout
    assert "--to-revisions=PREVIOUS_REVISION=100" in run.result.stdout


def _revision(name: str, day: int, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": f"2026-11-{day:02d}T08:30:00.123456Z"},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": ""}]},
    }


def _serving(*traffic: tuple[str, int]) -> dict[str, Any]:
    return {"metadata": {"name": "s"}, "status": {"traffic": [{"revisionName": n, "percent": p} for n, p in traffic]}}


def test_previous_is_by_creation_time_not_by_name_or_list_order() -> None:
    revisions = [_revision("s-b", 3), _revision("s-a", 5), _revision("s-c", 1)]
    assert previous(_serving(("s-a", 100)), revisions) == "s-b"
    assert previous(_serving(("s-b", 100)), revisions) == "s-c"


def test_previous_of_a_split_is_before_the_revision_with_most_traffic() -> None:
    revisions = [_revision("s-1", 1), _revision("s-2", 2), _revision("s-3", 3)]
    assert previous(_serving(("s-3", 10), ("s-2", 90)), revisions) == "s-1"


@pytest.mark.parametrize(
    ("service", "revisions", "reason"),
    [
        (_serving(("s-1", 100)), [_revision("s-1", 1)], "no Ready revision older than s-1"),
        (_serving(("s-2", 100)), [_revision("s-1", 1, ready=False), _revision("s-2", 2)], "no Ready revision"),
        (_serving(), [_revision("s-1", 1)], "serves no revision"),
        (_serving(("s-9", 100)), [_revision("s-1", 1)], "not in the revision list"),
    ],
)
def test_no_previous_revision_is_said_plainly(
    service: dict[str, Any], revisions: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(NoPrevious, match=reason):
        previous(service, revisions)
