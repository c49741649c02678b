"""Cost and scale on paper: the monthly bill and the limits at 10k, 100k and 1M users, before and after routing.

    .venv/bin/python -m bench.scale              # print the tables, rewrite the generated part of docs/scale.md
    .venv/bin/python -m bench.scale --no-write   # print only

Pure computation on bench/prices.json and bench/scale.json (see bench/scale_model.py
and bench/scale_limits.py); it runs in about a second and starts nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.scale_inputs import PRICES, ROOT, SCALE, Inputs, load_inputs
from bench.scale_limits import SPECS, Limit, crossings, limits, next_limit
from bench.scale_model import (
    AFTER,
    BEFORE,
    ROUTINGS,
    Bill,
    channel_capacity,
    channel_deliveries_per_second,
    instance_cpu,
    monthly_bill,
    operations,
    periods,
    rss_mb,
    streams_per_user,
)

DOC = ROOT / "docs" / "scale.md"
START = "<!-- scale:start -->"
END = "<!-- scale:end -->"
_NAMES = {s.key: s.name for s in SPECS}


def _n(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    if value == float("inf"):
        return "unbounded"
    if abs(value) >= 100 or digits == 0 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _usd(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"


def _users(value: int | None) -> str:
    if value is None:
        return "beyond 10 billion"
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def inputs_markdown(inputs: Inputs) -> list[str]:
    sc, dep = inputs.scenario, inputs.deployment
    lines = ["### Inputs", ""]
    lines += ["Scenario (bench/prices.json `scenario`):", ""]
    lines += _table(
        ["parameter", "value"],
        [
            ["notifications per user per day", _n(sc.notifications_per_user_per_day, 1)],
            ["connected hours per user per day", _n(sc.connected_hours_per_user_per_day, 1)],
            [
                "peak: share of users connected, hours a day",
                f"{sc.peak_concurrent_share:.0%}, {sc.peak_hours_per_day:g} h",
            ],
            ["users with a second stream (tab)", f"{sc.second_stream_share:.0%}"],
            ["connects per connected stream-hour", _n(sc.connects_per_connected_hour, 2)],
            ["notifications whose user has a live stream", f"{sc.live_share_of_notifications:.0%}"],
            ["busiest minutes / peak-hour rate", _n(sc.burst_factor, 1)],
            ["days per month, retention days", f"{sc.days_per_month:g}, {sc.retention_days:g}"],
        ],
    )
    lines += [f"Deployment ({inputs.deployment_source}):", ""]
    lines += _table(
        ["setting", "value"],
        [
            [
                "stream service",
                f"concurrency {dep.stream_concurrency:,}, min {dep.stream_min_instances} / max "
                f"{dep.stream_max_instances} instances, {dep.stream_vcpu:g} vCPU always allocated, "
                f"{dep.stream_memory_gib:g} GiB, heartbeat {dep.heartbeat_seconds:g} s",
            ],
            [
                "ingest function (gen2)",
                f"{dep.ingest_vcpu:g} vCPU, {dep.ingest_memory_gib:g} GiB, concurrency {dep.ingest_concurrency}, "
                f"max {dep.ingest_max_instances} instances",
            ],
            [
                "cleanup function (gen2) + Cloud Scheduler",
                f"every {dep.cleanup_interval_seconds:g} s, {dep.cleanup_vcpu:g} vCPU, "
                f"{dep.cleanup_memory_gib:g} GiB; {dep.scheduler_jobs} job",
            ],
        ],
    )
    lines += ["Calibration (bench/scale.json `calibration`; a measured results file replaces its figure):", ""]
    lines += _table(["figure", "value", "from"], [[s.name, s.value, s.source] for s in inputs.calibration_sources])
    lines += ["Prices:", ""]
    lines += _table(["services", "date", "source"], [[s.name, s.value, s.source] for s in inputs.price_sources])
    lines += [f"Quotas and limits: {inputs.quota_source}.", ""]
    return lines


def fleet_markdown(inputs: Inputs) -> list[str]:
    rows = []
    for users in inputs.users:
        peak, off = periods(users, inputs)
        hours = (peak.instances * peak.hours_per_day + off.instances * off.hours_per_day) * 30
        rows.append(
            [
                f"{users:,}",
                _n(peak.users),
                _n(peak.streams),
                f"{peak.instances:,} / {off.instances:,}",
                _n(hours),
                f"{_n(peak.notification_rate, 1)} ({_n(peak.notification_rate * inputs.scenario.burst_factor, 1)})",
                _n(rss_mb(peak.streams / peak.instances, inputs), 1),
            ]
        )
    lines = ["### Fleet", ""]
    return lines + _table(
        [
            "users",
            "connected at peak",
            "streams at peak",
            "instances peak / off-peak",
            "instance-hours/month",
            "notifications/s peak (burst)",
            "RSS per instance at peak (MB)",
        ],
        rows,
    )


def operations_markdown(inputs: Inputs) -> list[str]:
    header = ["operation"]
    columns = []
    for users in inputs.users:
        instances = periods(users, inputs)[0].instances
        for routing in ROUTINGS:
            header.append(f"{_users(users)} {routing}")
            columns.append(operations(routing, instances, inputs))
    fields = (
        ("Firestore reads per notification", "notification_reads"),
        ("Firestore writes per notification", "notification_writes"),
        ("Pub/Sub publishes per notification", "notification_publishes"),
        ("Pub/Sub deliveries per notification", "notification_deliveries"),
        ("Firestore reads per connection", "connection_reads"),
        ("Firestore writes per connection", "connection_writes"),
        ("Firestore deletes per connection", "connection_deletes"),
    )
    rows = [[title, *(_n(getattr(c, field), 2) for c in columns)] for title, field in fields]
    lines = ["### Operations per notification and per connection (at the peak's instance count)", ""]
    lines += _table(header, rows)
    s = streams_per_user(inputs)
    lines += [
        "Per notification: the worker's publish and the push to ingest, then the channel: before, one publish"
        " and one delivery per stream instance; after, one registry read and one publish and delivery per"
        f" instance holding the user's streams (1 + {inputs.scenario.second_stream_share:g} x (1 - 1/instances),"
        f" times the live share {inputs.scenario.live_share_of_notifications:g}). Per connection (connect +"
        f" disconnect, {s:g} streams per connected user): a disconnect deletes connections/{{user}} when it ends"
        " the user's last stream, else writes it. Per instance: one write per heartbeat interval; before"
        " routing one subscription, after one inbox topic and two subscriptions. TTL expiry: 2 deletes per"
        " notification.",
        "",
    ]
    return lines


def _item_rows(before: Bill, after: Bill) -> list[list[str]]:
    rows = []
    for b, a in zip(before.items, after.items, strict=True):
        rows.append([b.item, f"{_n(b.quantity)} {b.unit}", _usd(b.usd), f"{_n(a.quantity)} {a.unit}", _usd(a.usd)])
    rows.append(["**total**", "", f"**{_usd(before.total)}**", "", f"**{_usd(after.total)}**"])
    return rows


def cost_markdown(inputs: Inputs) -> list[str]:
    bills = {(u, r): monthly_bill(u, r, inputs) for u in inputs.users for r in ROUTINGS}
    lines = ["### Monthly cost", ""]
    summary = []
    for users in inputs.users:
        before, after = bills[(users, BEFORE)], bills[(users, AFTER)]
        summary.append(
            [
                f"{users:,}",
                _usd(before.total),
                _usd(after.total),
                _usd(after.usd("Cloud Run stream")),
                f"{_usd(before.usd('Pub/Sub'))} -> {_usd(after.usd('Pub/Sub'))}",
                f"{_usd(before.usd('Firestore'))} -> {_usd(after.usd('Firestore'))}",
                f"${after.total / users:.4f}",
            ]
        )
    lines += _table(
        [
            "users",
            "before routing",
            "after routing",
            "of which Cloud Run stream",
            "Pub/Sub before -> after",
            "Firestore before -> after",
            "after, per user",
        ],
        summary,
    )
    for users in inputs.users:
        lines += [f"#### {users:,} users", ""]
        lines += _table(
            ["item", "before: quantity", "before: USD", "after: quantity", "after: USD"],
            _item_rows(bills[(users, BEFORE)], bills[(users, AFTER)]),
        )
    lines += [
        "Free tiers are not subtracted except Pub/Sub's 10 GiB. Not included: the history API's reads"
        " (page loads), Cloud Logging, Secret Manager access, Artifact Registry storage, Cloud Build.",
        "",
    ]
    return lines


def _limit_cell(limit: Limit) -> str:
    text = _n(limit.value, 3)
    return f"**{text}**" if limit.bites else text


def limits_markdown(inputs: Inputs, table: dict[str, dict[str, int | None]]) -> list[str]:
    lines = ["### Limits at each scale", ""]
    lines += [
        "At the daily peak, the busiest minutes at the burst rate. **Bold**: past its threshold.",
        "",
    ]
    for users in inputs.users:
        before = limits(users, BEFORE, inputs)
        after = limits(users, AFTER, inputs)
        rows = []
        for b, a in zip(before, after, strict=True):
            threshold = "-" if b.threshold is None else _n(b.threshold, 3)
            detail = a.detail if a.detail == b.detail else f"before: {b.detail}; after: {a.detail}"
            rows.append([b.name, b.unit, _limit_cell(b), _limit_cell(a), threshold, detail])
        lines += [f"#### {users:,} users", ""]
        lines += _table(["limit", "unit", "before", "after", "threshold", "note"], rows)
    rows = []
    for users in inputs.users:
        for routing in ROUTINGS:
            passed = [_NAMES[k] for k, by in table.items() if (at := by[routing]) is not None and at <= users]
            ahead = next_limit(users, routing, table)
            upcoming = f"{_NAMES[ahead[0]]} at {_users(ahead[1])} users" if ahead else "none below 10 billion"
            rows.append([f"{users:,}", routing, "; ".join(passed) or "none", upcoming])
    lines += ["#### Next limit", ""]
    lines += _table(["users", "routing", "already passed", "next"], rows)
    return lines


def sweep_markdown(inputs: Inputs, table: dict[str, dict[str, int | None]]) -> list[str]:
    lines = ["### Where each limit bites", ""]
    lines += ["Users at which each limit passes its threshold (bisection on the model):", ""]
    lines += _table(
        ["limit", "before routing", "after routing"],
        [[_NAMES[k], _users(by[BEFORE]), _users(by[AFTER])] for k, by in table.items()],
    )
    burst = inputs.scenario.burst_factor
    rows = []
    for users in inputs.sweep_users:
        peak = periods(users, inputs)[0]
        cells = [f"{users:,}", f"{peak.instances:,}", _n(peak.notification_rate * burst, 1)]
        for routing in ROUTINGS:
            cells.append(f"{instance_cpu(peak, routing, inputs, burst):.1%}")
        for routing in ROUTINGS:
            cells.append(_n(channel_deliveries_per_second(peak, routing, inputs, burst)))
        for routing in ROUTINGS:
            cells.append(_n(channel_capacity(peak, routing, inputs)))
        for routing in ROUTINGS:
            cells.append(_usd(monthly_bill(users, routing, inputs).total))
        for routing in ROUTINGS:
            keys = [k for k, by in table.items() if (at := by[routing]) is not None and at <= users]
            cells.append(", ".join(keys) or "-")
        rows.append(cells)
    lines += [
        "The model over a range of users, at the peak's burst. Instance CPU: share of one vCPU spent on"
        " channel messages, deliveries and heartbeats; capacity: notifications/s the fleet takes in before an"
        " instance reaches the autoscaling CPU target (before routing it does not grow with instances). Limits"
        " passed, by key: " + ", ".join(f"{k} = {_NAMES[k]}" for k in table) + ".",
        "",
    ]
    lines += _table(
        [
            "users",
            "instances",
            "burst notifications/s",
            "CPU/instance before",
            "CPU/instance after",
            "channel deliveries/s before",
            "after",
            "capacity before",
            "after",
            "monthly before",
            "after",
            "limits passed before",
            "after",
        ],
        rows,
    )
    return lines


def steady_limits_markdown(inputs: Inputs) -> list[str]:
    dep, cal, q = inputs.deployment, inputs.calibration, inputs.quotas
    full = rss_mb(dep.stream_concurrency, inputs)
    memory_share = full / (dep.stream_memory_gib * 1024)
    lines = ["### Limits that do not grow with users", ""]
    lines += [
        f"- connections/{{user}}: one write per connect (an increment, which never conflicts; a conditioned"
        " rewrite only over the limit) and one conditioned write per disconnect. A user's streams cut at"
        f" once (up to {dep.max_streams_per_user}) reconnect within {dep.reconnect_spread_seconds:g} s, i.e."
        f" {dep.max_streams_per_user} writes on one document within a second against"
        f" {q.firestore_document_writes_per_second:g} sustained write/s: a burst, not a sustained rate, which"
        " the disconnects' conditioned writes absorb by retrying with jitter.",
        f"- stream_instances/{{id}}: 1 write per {dep.heartbeat_seconds:g} s"
        f" ({1 / dep.heartbeat_seconds:.3f}/s against {q.firestore_document_writes_per_second:g}/s).",
        "- users/{uid}/notifications/{id} with a content_request_id: every event of one content request"
        " rewrites that one document (the collapse key), so a worker reporting progress more often than once"
        f" a second passes the {q.firestore_document_writes_per_second:g} write/s per document.",
        f"- Memory: {cal.base_rss_mb:g} MB + {dep.stream_concurrency:,} streams x {cal.rss_kb_per_stream:g} KB"
        f" = {full:.0f} MB at full concurrency, {memory_share:.0%} of {dep.stream_memory_gib:g} GiB: the"
        " concurrency cap (1,000, Cloud Run's maximum) binds long before memory.",
        "",
    ]
    return lines


def commands_markdown() -> list[str]:
    return [
        "### Commands",
        "",
        "    .venv/bin/python -m bench.scale              # these tables; rewrites this section of docs/scale.md",
        "    make scale                                   # the same",
        "    .venv/bin/python -m bench.scale --no-write   # print only",
        "    .venv/bin/python -m bench.channel_receive > bench/channel_receive.json   # receive CPU, old vs lean",
        "    .venv/bin/python -m pytest -q tests/bench/test_scale_model.py",
        "",
        "Inputs: bench/prices.json (prices with date and source, scenario), bench/scale.json (deployment,"
        " calibration, quotas).",
        "",
    ]


def report(inputs: Inputs) -> str:
    table = crossings(inputs)
    lines: list[str] = []
    lines += commands_markdown()
    lines += cost_markdown(inputs)
    lines += limits_markdown(inputs, table)
    lines += sweep_markdown(inputs, table)
    lines += steady_limits_markdown(inputs)
    lines += fleet_markdown(inputs)
    lines += operations_markdown(inputs)
    lines += inputs_markdown(inputs)
    return "\n".join(lines).rstrip() + "\n"


def write_doc(markdown: str, path: Path = DOC) -> None:
    """Replace what lies between the markers of ``path``; a page without them gets them at its end."""
    block = f"{START}\n{markdown}{END}\n"
    if not path.exists():
        path.write_text(f"# Cost and scale on paper\n\n{block}")
        return
    text = path.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        path.write_text(head + block + tail)
    else:
        path.write_text(text.rstrip("\n") + "\n\n" + block)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--prices", type=Path, default=PRICES)
    parser.add_argument("--inputs", type=Path, default=SCALE)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave docs/scale.md alone")
    args = parser.parse_args(argv)
    markdown = report(load_inputs(args.prices, args.inputs))
    sys.stdout.write(markdown)
    if not args.no_write:
        write_doc(markdown, args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
