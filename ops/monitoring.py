"""The service level objectives, their burn-rate alert policies and the dashboard, from one definition.

    python -m ops.monitoring          # rewrite ops/alerts/slo_*.yaml and ops/dashboards/notifications.json
    python -m ops.monitoring --check  # exit 1 if a committed file differs from what this module makes

deploy.sh applies the written files (it needs no Python package); a test keeps
them in step with this module. Every SLO is a ratio of bad to total events over
a rolling 28 days, measured by log-based metrics (ops/metrics/), and alerted on
with the multiwindow burn rates of Google's SRE workbook: a page when 2% of the
month's error budget burns within an hour, a ticket when 5% burns within six.
The conditions are PromQL: the delivery SLO's events are sums of values in the
stream's "stats" lines (log-based distributions), which only PromQL can add up.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPS = Path(__file__).resolve().parent
DASHBOARD_FILE = OPS / "dashboards" / "notifications.json"
STREAM_SERVICE = "notifications-stream"
SERVICES = ("notifications-stream", "notifications-ingest", "notifications-cleanup")
DEAD_LETTER_SUBSCRIPTION = "content-generation-events-dead-letter-inspect"
# Too few events make one failure look like an outage: no SLO page below this many in the long window.
MIN_EVENTS = 100


def log_metric(name: str, suffix: str = "") -> str:
    """The PromQL selector of a log-based metric of ops/metrics/ (``_sum``/``_count`` for distributions)."""
    return f'logging_googleapis_com:user_{name}{suffix}{{monitored_resource="cloud_run_revision"}}'


def run_requests(extra: str = "") -> str:
    labels = f'monitored_resource="cloud_run_revision",service_name="{STREAM_SERVICE}"{extra}'
    return f"run_googleapis_com:request_count{{{labels}}}"


@dataclass(frozen=True)
class Slo:
    key: str
    title: str
    objective: float
    bad: str
    total: str
    meaning: str

    @property
    def budget(self) -> float:
        return round(1 - self.objective, 6)

    def error_ratio(self, window: str) -> str:
        return f"sum(rate({self.bad}[{window}])) / sum(rate({self.total}[{window}]))"

    def good_ratio(self, window: str) -> str:
        return f"1 - ({self.error_ratio(window)})"


@dataclass(frozen=True)
class BurnRate:
    name: str
    factor: float
    long: str
    short: str
    severity: str
    budget_share: str


SLOS = (
    Slo(
        "delivery",
        "delivery within 2 s",
        0.99,
        log_metric("notifications_deliveries_late", "_sum"),
        log_metric("notifications_deliveries", "_sum"),
        "99% of notifications reach the user's open streams within 2 s of the worker's publish",
    ),
    Slo(
        "availability",
        "API availability",
        0.999,
        log_metric("notifications_api_5xx"),
        log_metric("notifications_api_requests"),
        "99.9% of stream and history API requests are answered without a 5xx",
    ),
    Slo(
        "ingest",
        "ingest success",
        0.999,
        log_metric("notifications_ingest_failures"),
        log_metric("notifications_ingest_attempts"),
        "99.9% of ingest deliveries end stored, duplicate or correctly dead-lettered, not failed",
    ),
)
BURN_RATES = (
    BurnRate("fast", 14.4, "1h", "5m", "CRITICAL", "2% of the 28-day error budget in 1 hour"),
    BurnRate("slow", 6.0, "6h", "30m", "WARNING", "5% of the 28-day error budget in 6 hours"),
)


def burn_query(slo: Slo, burn: BurnRate) -> str:
    threshold = round(burn.factor * slo.budget, 6)
    return (
        f"(\n  {slo.error_ratio(burn.long)} > {threshold}\n"
        f"  and\n  {slo.error_ratio(burn.short)} > {threshold}\n)\n"
        f"and\nsum(increase({slo.total}[{burn.long}])) >= {MIN_EVENTS}"
    )


def alert_policy(slo: Slo, burn: BurnRate) -> str:
    """The YAML of one burn-rate alert policy (written by hand for a readable multi-line query)."""
    query = "\n".join(f"        {line}" for line in burn_query(slo, burn).splitlines())
    return f"""# Written by ops/monitoring.py (python -m ops.monitoring); edit that, not this file.
displayName: "Notifications SLO: {slo.title}, {burn.name} burn"
combiner: OR
severity: {burn.severity}
conditions:
  - displayName: Error budget burning {burn.factor:g}x ({burn.budget_share}), over {burn.long} and {burn.short}
    conditionPrometheusQueryLanguage:
      # The log-based metrics may have no data yet on a first deploy.
      disableMetricValidation: true
      duration: 0s
      evaluationInterval: 60s
      query: |-
{query}
alertStrategy:
  autoClose: 1800s
documentation:
  mimeType: text/markdown
  content: >-
    SLO: {slo.meaning} (28 days, error budget {slo.budget:.2%}).
    Runbook: docs/operations.md, section SLO: {slo.title}.
"""


# The 5xx alert: a share of the stream service's requests, not an absolute rate, with enough
# requests in the window that a handful of failures at night does not page.
FIVE_XX_SHARE = 0.05
FIVE_XX_MIN_REQUESTS = 20


def five_xx_share(window: str) -> str:
    five_xx = run_requests(',response_code_class="5xx"')
    return f"sum(rate({five_xx}[{window}])) / sum(rate({run_requests()}[{window}]))"


def five_xx_alert() -> str:
    query = (
        f"{five_xx_share('5m')} > {FIVE_XX_SHARE}\nand\nsum(increase({run_requests()}[5m])) >= {FIVE_XX_MIN_REQUESTS}"
    )
    indented = "\n".join(f"        {line}" for line in query.splitlines())
    # The display name is the policy's key in deploy.sh: kept from when this was an absolute rate.
    return f"""# Written by ops/monitoring.py (python -m ops.monitoring); edit that, not this file.
displayName: "Notifications: stream service 5xx rate"
combiner: OR
severity: ERROR
conditions:
  - displayName: More than {FIVE_XX_SHARE:.0%} of the stream service's requests answered 5xx over 5 minutes
    conditionPrometheusQueryLanguage:
      duration: 300s
      evaluationInterval: 60s
      query: |-
{indented}
alertStrategy:
  autoClose: 1800s
documentation:
  mimeType: text/markdown
  content: >-
    Streams or history calls fail (mostly 503: Firestore or Pub/Sub unavailable, or the kill switch).
    Runbook: docs/operations.md, section Stream 5xx.
"""


def alert_files() -> dict[Path, str]:
    alerts = {OPS / "alerts" / "stream_5xx.yaml": five_xx_alert()}
    for slo in SLOS:
        for burn in BURN_RATES:
            alerts[OPS / "alerts" / f"slo_{slo.key}_{burn.name}.yaml"] = alert_policy(slo, burn)
    return alerts


# --- the dashboard -----------------------------------------------------------------------

COLUMNS = 48
SUBSCRIPTION = 'resource.type="pubsub_subscription"'
TILE_WIDTH = 16
TILE_HEIGHT = 9


def _filter(metric: str, extra: str = "") -> str:
    return f'metric.type="{metric}"' + (f" {extra}" if extra else "")


def _series(
    metric: str,
    aligner: str,
    reducer: str,
    *,
    extra: str = "",
    group_by: Sequence[str] = (),
    legend: str = "",
    period: str = "60s",
) -> dict[str, Any]:
    aggregation: dict[str, Any] = {
        "alignmentPeriod": period,
        "perSeriesAligner": aligner,
        "crossSeriesReducer": reducer,
    }
    if group_by:
        aggregation["groupByFields"] = list(group_by)
    data: dict[str, Any] = {
        "timeSeriesQuery": {"timeSeriesFilter": {"filter": _filter(metric, extra), "aggregation": aggregation}},
        "plotType": "LINE",
    }
    if legend:
        data["legendTemplate"] = legend
    return data


def _promql(query: str, legend: str) -> dict[str, Any]:
    return {"timeSeriesQuery": {"prometheusQuery": query}, "plotType": "LINE", "legendTemplate": legend}


def _user(name: str) -> str:
    return f"logging.googleapis.com/user/{name}"


def _chart(
    title: str, data: list[dict[str, Any]], unit: str, threshold: tuple[float, str, str] | None = None
) -> dict[str, Any]:
    chart: dict[str, Any] = {"dataSets": data, "yAxis": {"label": unit, "scale": "LINEAR"}}
    if threshold is not None:
        value, label, direction = threshold
        chart["thresholds"] = [{"value": value, "label": label, "color": "RED", "direction": direction}]
    return {"title": title, "xyChart": chart}


def _quantiles(prefix: str, names: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """One line per quantile metric: the worst instance's value in each minute."""
    return [
        _series(_user(f"{prefix}{suffix}"), "ALIGN_PERCENTILE_99", "REDUCE_MAX", legend=legend)
        for suffix, legend in names
    ]


def dashboard_widgets() -> list[dict[str, Any]]:
    """The charts, row by row, three to a row."""
    rows: list[list[dict[str, Any]]] = [
        [
            _chart(
                f"SLO: {slo.title} (objective {slo.objective:.1%}, 1 h window)",
                [_promql(slo.good_ratio("1h"), "good share, last hour")],
                "share",
                (slo.objective, "objective", "BELOW"),
            )
            for slo in SLOS
        ],
        [
            _chart(
                "Open streams per instance",
                [
                    _series(
                        _user("notifications_open_streams"),
                        "ALIGN_PERCENTILE_99",
                        "REDUCE_MAX",
                        legend="busiest instance",
                    ),
                    _series(
                        _user("notifications_open_streams"),
                        "ALIGN_PERCENTILE_50",
                        "REDUCE_MEAN",
                        legend="median instance",
                    ),
                ],
                "streams",
            ),
            _chart(
                "Open streams, all instances",
                # Each instance reports once a minute (STREAM_STATS_INTERVAL): a minute's sum is the total.
                [_promql(f"sum(rate({log_metric('notifications_open_streams', '_sum')}[5m])) * 60", "open streams")],
                "streams",
            ),
            _chart(
                "Instances by service",
                [
                    _series(
                        "run.googleapis.com/container/instance_count",
                        "ALIGN_MAX",
                        "REDUCE_SUM",
                        extra='resource.type="cloud_run_revision" resource.labels.service_name=one_of('
                        + ",".join(f'"{s}"' for s in SERVICES)
                        + ")",
                        group_by=["resource.label.service_name", "metric.label.state"],
                        legend="${resource.labels.service_name} ${metric.labels.state}",
                    )
                ],
                "instances",
            ),
        ],
        [
            _chart(
                "Stream connects per second",
                [_promql(f"sum(rate({log_metric('notifications_streams_opened', '_sum')}[5m]))", "streams opened")],
                "1/s",
            ),
            _chart(
                "Stream connects refused, by status",
                [
                    _series(
                        _user("notifications_stream_rejections"),
                        "ALIGN_RATE",
                        "REDUCE_SUM",
                        extra='resource.type="cloud_run_revision"',
                        group_by=["metric.label.status"],
                        legend="${metric.labels.status}",
                    )
                ],
                "1/s",
            ),
            _chart(
                "Stream service 5xx share of requests",
                [_promql(five_xx_share("5m"), "5xx share")],
                "share",
                (FIVE_XX_SHARE, "alert", "ABOVE"),
            ),
        ],
        [
            _chart(
                "Fan-out latency (channel publish to streams), worst instance",
                _quantiles(
                    "notifications_fanout_latency",
                    (("_p50", "p50"), ("", "p95"), ("_p99", "p99")),
                ),
                "s",
            ),
            _chart(
                "End-to-end delay (worker publish to stream), worst instance",
                _quantiles(
                    "notifications_delivery_delay",
                    (("_p50", "p50"), ("_p95", "p95"), ("_p99", "p99")),
                ),
                "s",
                (2.0, "delivery objective", "ABOVE"),
            ),
            _chart(
                "Deliveries onto open streams",
                [
                    _promql(f"sum(rate({log_metric('notifications_deliveries', '_sum')}[5m]))", "delivered"),
                    _promql(f"sum(rate({log_metric('notifications_deliveries_late', '_sum')}[5m]))", "later than 2 s"),
                ],
                "1/s",
            ),
        ],
        [
            _chart(
                "Ingest deliveries by outcome",
                [
                    _series(
                        _user("notifications_ingest_attempts"),
                        "ALIGN_RATE",
                        "REDUCE_SUM",
                        extra='resource.type="cloud_run_revision"',
                        group_by=["metric.label.outcome"],
                        legend="${metric.labels.outcome}",
                    )
                ],
                "1/s",
            ),
            _chart(
                "Ingest errors, dead letters, parked by the kill switch",
                [
                    _series(
                        _user(name),
                        "ALIGN_RATE",
                        "REDUCE_SUM",
                        extra='resource.type="cloud_run_revision"',
                        legend=legend,
                    )
                    for name, legend in (
                        ("notifications_ingest_errors", "ERROR lines"),
                        ("notifications_dead_lettered", "dead-lettered"),
                        ("notifications_ingest_parked", "parked (kill switch)"),
                    )
                ],
                "1/s",
            ),
            _chart(
                "Dead letters waiting",
                [
                    _series(
                        "pubsub.googleapis.com/subscription/num_undelivered_messages",
                        "ALIGN_MAX",
                        "REDUCE_SUM",
                        extra=f'{SUBSCRIPTION} resource.labels.subscription_id="{DEAD_LETTER_SUBSCRIPTION}"',
                        legend="messages",
                    )
                ],
                "messages",
                (0.5, "alert", "ABOVE"),
            ),
        ],
        [
            _chart(
                "Firestore operations",
                [
                    _series(
                        f"firestore.googleapis.com/document/{kind}_count", "ALIGN_RATE", "REDUCE_SUM", legend=kind + "s"
                    )
                    for kind in ("read", "write", "delete")
                ],
                "1/s",
            ),
            _chart(
                "Pub/Sub messages published, by topic",
                [
                    _series(
                        "pubsub.googleapis.com/topic/send_message_operation_count",
                        "ALIGN_RATE",
                        "REDUCE_SUM",
                        extra='resource.type="pubsub_topic"',
                        group_by=["resource.label.topic_id"],
                        legend="${resource.labels.topic_id}",
                    )
                ],
                "1/s",
            ),
            _chart(
                "Channel backlog: oldest unacked message on stream instances",
                [
                    _series(
                        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
                        "ALIGN_MAX",
                        "REDUCE_MAX",
                        extra=f'{SUBSCRIPTION} resource.labels.subscription_id=starts_with("stream-instance-")',
                        legend="oldest",
                    )
                ],
                "s",
            ),
        ],
    ]
    return [widget for row in rows for widget in row]


def dashboard() -> dict[str, Any]:
    intro = {
        "title": "Notifications",
        "text": {
            "content": (
                "Worker publish -> ingest -> Firestore + live channel -> stream service -> browsers. "
                "Runbook and SLOs: docs/operations.md. Kill switch: `python -m ops.killswitch --project P status`. "
                "Rollback: `./deploy.sh --project P rollback [ingest|stream|cleanup]`."
            ),
            "format": "MARKDOWN",
        },
    }
    tiles = [{"xPos": 0, "yPos": 0, "width": COLUMNS, "height": 4, "widget": intro}]
    for index, widget in enumerate(dashboard_widgets()):
        row, column = divmod(index, COLUMNS // TILE_WIDTH)
        tiles.append(
            {
                "xPos": column * TILE_WIDTH,
                "yPos": 4 + row * TILE_HEIGHT,
                "width": TILE_WIDTH,
                "height": TILE_HEIGHT,
                "widget": widget,
            }
        )
    return {"displayName": "Notifications", "mosaicLayout": {"columns": COLUMNS, "tiles": tiles}}


def files() -> dict[Path, str]:
    return {**alert_files(), DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    stale = [path for path, text in files().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(OPS.parent)} (run python -m ops.monitoring)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files()[path])
        print(f"wrote {path.relative_to(OPS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
