"""The SLO alerts and the dashboard: generated files in step, PromQL that parses, metrics that exist,
and log-based metrics that read what the code really logs."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import promql_parser
import pytest
import yaml

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from functions.stream.service import StreamService
from ops import monitoring
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.config import load_settings
from shared.errors import BackendUnavailable
from shared.feed import Applied
from shared.notification import NewNotification
from tests.support import ROOT
from tests.support.events import valid_event

METRICS = {path.stem: yaml.safe_load(path.read_text()) for path in (ROOT / "ops" / "metrics").glob("*.yaml")}
ALERTS = {path.name: yaml.safe_load(path.read_text()) for path in (ROOT / "ops" / "alerts").glob("*.yaml")}
DASHBOARD = json.loads(monitoring.DASHBOARD_FILE.read_text())
# Built-in metrics the PromQL may name, as PromQL spells them.
BUILT_IN = {"run_googleapis_com:request_count"}


def _kind(name: str) -> str:
    return str(METRICS[name]["metricDescriptor"]["valueType"])


def _queries() -> list[tuple[str, str]]:
    found = []
    for name, policy in ALERTS.items():
        for condition in policy["conditions"]:
            if "conditionPrometheusQueryLanguage" in condition:
                found.append((name, condition["conditionPrometheusQueryLanguage"]["query"]))
    for tile in DASHBOARD["mosaicLayout"]["tiles"]:
        for data in tile["widget"].get("xyChart", {}).get("dataSets", []):
            if "prometheusQuery" in data["timeSeriesQuery"]:
                found.append((tile["widget"]["title"], data["timeSeriesQuery"]["prometheusQuery"]))
    return found


def _selectors(expression: Any) -> list[str]:
    """Every metric name a parsed PromQL expression selects."""
    names: list[str] = []
    if isinstance(expression, promql_parser.VectorSelector):
        names.append(str(expression.name))
    for attribute in ("expr", "lhs", "rhs", "vector_selector"):
        child = getattr(expression, attribute, None)
        if child is not None:
            names += _selectors(child)
    for child in getattr(expression, "args", None) or []:
        names += _selectors(child)
    return names


def test_the_generated_files_are_up_to_date() -> None:
    assert monitoring.main(["--check"]) == 0, "run python -m ops.monitoring and commit the result"


def test_every_promql_query_parses_and_names_defined_metrics() -> None:
    queries = _queries()
    assert len(queries) >= 7 + 8
    for where, query in queries:
        try:
            parsed = promql_parser.parse(query)
        except Exception as exc:  # reported with the query
            pytest.fail(f"{where}: PromQL does not parse ({exc}): {query}")
        names = _selectors(parsed)
        assert names, f"{where}: selects no metric"
        for name in names:
            if name in BUILT_IN:
                continue
            assert name.startswith("logging_googleapis_com:user_"), f"{where}: unknown metric {name}"
            metric = name.removeprefix("logging_googleapis_com:user_")
            base = re.sub(r"_(sum|count|bucket)$", "", metric)
            if base != metric and base in METRICS:
                assert _kind(base) == "DISTRIBUTION", f"{where}: {name} on a counter"
            else:
                assert metric in METRICS, f"{where}: {metric} is not in ops/metrics/"
                assert _kind(metric) == "INT64", f"{where}: a distribution needs _sum, _count or _bucket"


def test_burn_rate_thresholds_are_the_sre_workbooks() -> None:
    # 14.4x and 6x the error budget (1 - objective): 2% of 28 days' budget in 1 h, 5% in 6 h.
    expected = {
        "slo_delivery_fast.yaml": ("> 0.144", "[1h]", "[5m]"),
        "slo_delivery_slow.yaml": ("> 0.06", "[6h]", "[30m]"),
        "slo_availability_fast.yaml": ("> 0.0144", "[1h]", "[5m]"),
        "slo_availability_slow.yaml": ("> 0.006", "[6h]", "[30m]"),
        "slo_ingest_fast.yaml": ("> 0.0144", "[1h]", "[5m]"),
        "slo_ingest_slow.yaml": ("> 0.006", "[6h]", "[30m]"),
    }
    for name, needles in expected.items():
        policy = ALERTS[name]
        query = policy["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
        for needle in needles:
            assert needle in query, f"{name}: {needle}"
        assert policy["severity"] == ("CRITICAL" if "fast" in name else "WARNING")
        assert "docs/operations.md, section SLO:" in policy["documentation"]["content"]


def test_the_5xx_alert_is_a_share_of_requests() -> None:
    query = ALERTS["stream_5xx.yaml"]["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
    ratio = promql_parser.parse(query.split("\nand\n")[0])
    assert isinstance(ratio, promql_parser.BinaryExpr)  # share > 0.05
    share = ratio.lhs
    assert isinstance(share, promql_parser.BinaryExpr) and "5xx" in str(share.lhs) and "5xx" not in str(share.rhs)


def test_filter_based_charts_use_defined_metrics_with_fitting_aligners() -> None:
    used = set()
    for tile in DASHBOARD["mosaicLayout"]["tiles"]:
        for data in tile["widget"].get("xyChart", {}).get("dataSets", []):
            series = data["timeSeriesQuery"].get("timeSeriesFilter")
            if series is None:
                continue
            metric = re.search(r'metric\.type="([^"]+)"', series["filter"])
            assert metric, tile
            aligner = series["aggregation"]["perSeriesAligner"]
            if metric.group(1).startswith("logging.googleapis.com/user/"):
                name = metric.group(1).rsplit("/", 1)[1]
                assert name in METRICS, f"{name} is not in ops/metrics/"
                used.add(name)
                if _kind(name) == "DISTRIBUTION":
                    assert aligner.startswith("ALIGN_PERCENTILE_"), name
                else:
                    assert aligner == "ALIGN_RATE", name
    # Every log-based metric deploy.sh creates is on the dashboard or behind an alert.
    queried = " ".join(query for _, query in _queries()) + " ".join(json.dumps(policy) for policy in ALERTS.values())
    unused = [name for name in METRICS if name not in used and name not in queried]
    assert unused == []


def test_tiles_fit_the_grid_without_overlapping() -> None:
    layout = DASHBOARD["mosaicLayout"]
    taken: set[tuple[int, int]] = set()
    for tile in layout["tiles"]:
        assert tile["xPos"] + tile["width"] <= layout["columns"]
        cells = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not cells & taken, tile["widget"]["title"]
        taken |= cells
    titles = " ".join(t["widget"]["title"] for t in layout["tiles"]).lower()
    for needed in (
        "open streams per instance",
        "connects",
        "refused",
        "fan-out latency",
        "end-to-end delay",
        "ingest deliveries",
        "dead letters",
        "firestore",
        "pub/sub",
        "instances",
    ):
        assert needed in titles, needed


# --- the log-based metrics read what the code logs ------------------------------------


def _extracted(metric: dict[str, Any]) -> str:
    match = re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", metric["valueExtractor"])
    assert match, metric["valueExtractor"]
    return match.group(1)


def _messages(metric: dict[str, Any]) -> list[str]:
    found = re.search(r'jsonPayload\.message=(\([^)]*\)|"[^"]*")', metric["filter"])
    assert found, metric["filter"]
    return re.findall(r'"([^"]+)"', found.group(1))


def test_stream_stats_metrics_extract_fields_the_service_logs() -> None:
    settings = load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"})
    logged = set(StreamService(settings, Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())).stats())
    stats_metrics = {name: m for name, m in METRICS.items() if 'jsonPayload.message="stream stats"' in m["filter"]}
    assert len(stats_metrics) >= 10
    for name, metric in stats_metrics.items():
        assert _extracted(metric) in logged, f"{name} reads a field the stats line does not carry"


class _Down(MemoryStore):
    def apply(self, new: NewNotification) -> Applied:
        raise BackendUnavailable("Firestore unavailable")


def test_every_ingest_outcome_logs_one_line_the_slo_metrics_count(caplog: pytest.LogCaptureFixture) -> None:
    attempts = set(_messages(METRICS["notifications_ingest_attempts"]))
    failures = set(_messages(METRICS["notifications_ingest_failures"]))
    settings = load_settings({"NOTIFICATIONS_BACKEND": "memory", "EVENT_MAX_AGE_SECONDS": "60"})
    memory = Backends(MemoryStore(), MemoryChannel(), MemoryDeadLetters())
    event = json.dumps(valid_event("u1")).encode()
    now = datetime.now(UTC)
    cases = [
        (PubsubMessage(event, {}, "m1", now), memory, Outcome.STORED, False),
        (PubsubMessage(event, {}, "m1", now), memory, Outcome.DUPLICATE, False),
        (PubsubMessage(b"{}", {}, "m3", now), memory, Outcome.DEAD_LETTERED, False),
        (PubsubMessage(event, {}, "m4", now), Backends(_Down(), MemoryChannel(), MemoryDeadLetters()), None, True),
        (
            PubsubMessage(event, {}, "m5", now - timedelta(seconds=120)),
            Backends(_Down(), MemoryChannel(), MemoryDeadLetters()),
            Outcome.DEAD_LETTERED,
            True,
        ),
    ]
    caplog.set_level(logging.INFO, logger="functions.ingest.ingest")
    for message, backends, outcome, failed in cases:
        caplog.clear()
        if outcome is None:
            with pytest.raises(BackendUnavailable):
                ingest(message, backends, settings)
        else:
            assert ingest(message, backends, settings) is outcome
        counted = [r for r in caplog.records if r.getMessage() in attempts]
        assert len(counted) == 1, f"{message.message_id}: {[r.getMessage() for r in caplog.records]}"
        record = counted[0]
        gave_up = record.getMessage() == "invalid content event dead-lettered" and str(
            getattr(record, "reason", "")
        ).startswith("gave up")
        assert (record.getMessage() in failures or gave_up) is failed, message.message_id


def _url_regex(name: str) -> re.Pattern[str]:
    found = re.search(r'httpRequest\.requestUrl=~"([^"]+)"', METRICS[name]["filter"])
    assert found
    return re.compile(found.group(1))


def test_the_api_metrics_count_the_api_routes_and_nothing_else() -> None:
    api = _url_regex("notifications_api_requests")
    stream = _url_regex("notifications_stream_rejections")
    assert _url_regex("notifications_api_5xx").pattern == api.pattern
    host = "https://notifications-stream-abc-ew.a.run.app"
    counted = [
        "/api/v1/notifications",
        "/api/v1/notifications?limit=20&unread_only=true",
        "/api/v1/notifications/stream?ticket=t",
        "/api/v1/notifications/mark-read",
        "/api/v1/notifications/mark-unread",
        "/api/v1/notifications/0193b5c2a4f1e0000000abcd",
    ]
    not_counted = ["/api/v1/notifications/health", "/api/v1/notifications/live", "/api/v1/notifications/ready"]
    not_counted += ["/api/v1/notifications/client.js", "/metrics", "/demo"]
    for path in counted:
        assert api.search(host + path), path
    for path in not_counted:
        assert not api.search(host + path), path
    assert stream.search(host + "/api/v1/notifications/stream?token=x") and not stream.search(
        host + "/api/v1/notifications"
    )
    # The paths above are the app's: a route renamed in the code must be renamed here too.
    app = create_app(load_stream_settings({"NOTIFICATIONS_BACKEND": "memory", "NOTIFICATIONS_LOCAL_MODE": "true"}))
    paths = {getattr(route, "path", "") for route in app.routes}
    for path in counted[2:5] + not_counted[:4]:
        assert path.split("?")[0] in paths, path


def test_every_alert_names_a_runbook_section_that_exists() -> None:
    headings = [
        line.removeprefix("### ")
        for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("### ")
    ]
    for name, policy in ALERTS.items():
        section = re.search(r"docs/operations\.md, section (.+?)\.\s*$", policy["documentation"]["content"].strip())
        assert section, name
        found = [h for h in headings if h.startswith(section.group(1))]
        assert len(found) == 1, f"{name}: no section {section.group(1)!r}"
        assert f"`{name}`" in found[0], f"{name}: the section does not name its alert file"
