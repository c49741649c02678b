"""The scale model's inputs: prices and scenario (bench/prices.json); deployment, calibration, quotas (scale.json).

A calibration figure may name a results file (``measured``): when that file
exists its figure replaces the one written in the JSON, and the docs say which
was used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRICES = ROOT / "bench" / "prices.json"
SCALE = ROOT / "bench" / "scale.json"


class InputError(ValueError):
    """An input file is missing a figure or holds one the model cannot use."""


@dataclass(frozen=True)
class Prices:
    firestore_read: float  # USD per document
    firestore_write: float
    firestore_delete: float
    firestore_storage_gib_month: float
    pubsub_per_tib: float
    pubsub_free_gib_month: float
    run_instance_vcpu_second: float
    run_instance_gib_second: float
    run_request_vcpu_second: float
    run_request_gib_second: float
    run_per_request: float
    run_billing_granularity_seconds: float
    egress_per_gib: float
    scheduler_per_job_month: float


@dataclass(frozen=True)
class Scenario:
    notifications_per_user_per_day: float
    days_per_month: float
    connected_hours_per_user_per_day: float
    connects_per_connected_hour: float
    retention_days: float
    stored_bytes_per_notification: float
    peak_concurrent_share: float
    peak_hours_per_day: float
    second_stream_share: float
    live_share_of_notifications: float
    burst_factor: float


@dataclass(frozen=True)
class Deployment:
    stream_concurrency: int
    stream_min_instances: int
    stream_max_instances: int
    stream_vcpu: float
    stream_memory_gib: float
    heartbeat_seconds: float
    reconnect_spread_seconds: float
    max_streams_per_user: int
    ingest_memory_gib: float
    ingest_vcpu: float
    ingest_max_instances: int
    ingest_concurrency: int
    cleanup_memory_gib: float
    cleanup_vcpu: float
    cleanup_interval_seconds: float
    scheduler_jobs: int


@dataclass(frozen=True)
class Calibration:
    recv_us_before: float  # CPU per channel message a stream instance receives
    recv_us_after: float
    dispatch_us: float  # per message handed to the hub through the bench's injection route
    per_stream_us: float  # per stream a message is written to
    heartbeat_us: float  # per stream heartbeat
    rss_kb_per_stream: float
    base_rss_mb: float
    pubsub_billable_kb_per_message: float
    firestore_writes_per_notification: float
    ttl_deletes_per_notification: float
    connect_reads_before: float
    connect_reads_after: float
    cleanup_reads_per_run: float
    ingest_seconds_before: float
    ingest_seconds_after: float
    ingest_cold_start_seconds: float
    cleanup_seconds_per_run: float
    notification_wire_bytes: float
    heartbeat_wire_bytes: float
    connect_wire_bytes: float


@dataclass(frozen=True)
class Quotas:
    pubsub_topics_per_project: int
    pubsub_subscriptions_per_project: int
    pubsub_subscriptions_per_topic: int
    fixed_topics: int
    fixed_subscriptions: int
    firestore_document_writes_per_second: float
    firestore_sequential_index_writes_per_second: float
    firestore_ramp_ops_per_second: float
    cloud_run_autoscaling_cpu_target: float
    cloud_run_max_instances_without_quota_increase: int


@dataclass(frozen=True)
class Source:
    """One input as the docs show it: name, value, where it comes from."""

    name: str
    value: str
    source: str


@dataclass(frozen=True)
class Inputs:
    prices: Prices
    scenario: Scenario
    deployment: Deployment
    calibration: Calibration
    quotas: Quotas
    users: tuple[int, ...]
    sweep_users: tuple[int, ...]
    price_sources: tuple[Source, ...]
    calibration_sources: tuple[Source, ...]
    quota_source: str
    deployment_source: str


def _number(section: dict[str, Any], key: str, where: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _fields(cls: type, section: dict[str, Any], where: str) -> dict[str, Any]:
    """The dataclass's fields read from ``section``, as ints where the field is annotated int."""
    out: dict[str, Any] = {}
    for name, kind in cls.__annotations__.items():
        value = _number(section, name, where)
        out[name] = int(value) if kind == "int" else value
    return out


def solve_fanout(loads: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Per-message, per-stream and per-heartbeat CPU (us) from three fan-out loads.

    Each load gives CPU per delivery at ``rate`` notifications/s, each written
    to ``streams_per_notification`` streams, with ``streams`` streams
    heartbeaten every ``heartbeat_seconds``. Its CPU per second is then
    rate*dispatch + rate*fanout*per_stream + streams/interval*heartbeat:
    three loads, three unknowns (Cramer's rule).
    """
    if len(loads) != 3:
        raise InputError(f"fanout_loads needs exactly 3 loads, got {len(loads)}")
    rows: list[list[float]] = []
    totals: list[float] = []
    for load in loads:
        rate = _number(load, "rate", "fanout load")
        fanout = _number(load, "streams_per_notification", "fanout load")
        beats = _number(load, "streams", "fanout load") / _number(load, "heartbeat_seconds", "fanout load")
        rows.append([rate, rate * fanout, beats])
        totals.append(_number(load, "cpu_us_per_delivery", "fanout load") * rate * fanout)
    determinant = _det(rows)
    if abs(determinant) < 1e-9:
        raise InputError("fanout_loads do not separate the three costs (choose loads that differ)")
    solution = []
    for column in range(3):
        replaced = [[totals[r] if c == column else rows[r][c] for c in range(3)] for r in range(3)]
        solution.append(_det(replaced) / determinant)
    dispatch, per_stream, heartbeat = solution
    return dispatch, per_stream, heartbeat


def _det(m: list[list[float]]) -> float:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def _select(data: Any, steps: list[Any]) -> Any:
    """Follow ``steps`` into ``data``: a key, a list index, or {field: value} for the first list item matching."""
    for step in steps:
        if isinstance(step, dict):
            if not isinstance(data, list):
                return None
            data = next((item for item in data if all(item.get(k) == v for k, v in step.items())), None)
        elif isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and -len(data) <= step < len(data):
            data = data[step]
        else:
            return None
        if data is None:
            return None
    return data


def _calibrated(name: str, entry: dict[str, Any], root: Path) -> tuple[float, Source]:
    value = _number(entry, "value", f"calibration {name}")
    unit = str(entry.get("unit", ""))
    source = str(entry.get("source", ""))
    measured = entry.get("measured")
    if isinstance(measured, dict):
        path = root / str(measured.get("file", ""))
        found: Any = None
        if path.is_file():
            try:
                found = _select(json.loads(path.read_text()), list(measured.get("select", [])))
            except json.JSONDecodeError as exc:
                raise InputError(f"calibration {name}: {path.name} is not JSON ({exc})") from exc
        if isinstance(found, int | float) and not isinstance(found, bool) and found > 0:
            value = float(found)
            source = f"measured: {measured.get('file')} (`{measured.get('command')}`)"
        else:
            source += f"; replaced by {measured.get('file')} when present (`{measured.get('command')}`)"
    return value, Source(name, f"{value:g} {unit}".strip(), source)


def load_inputs(prices_path: Path = PRICES, scale_path: Path = SCALE, root: Path = ROOT) -> Inputs:
    prices_json = json.loads(prices_path.read_text())
    scale = json.loads(scale_path.read_text())
    fs, ps, run = prices_json["firestore"], prices_json["pubsub"], prices_json["cloud_run"]
    scheduler = prices_json["cloud_scheduler"]
    prices = Prices(
        firestore_read=_number(fs, "read_per_100k", "firestore") / 1e5,
        firestore_write=_number(fs, "write_per_100k", "firestore") / 1e5,
        firestore_delete=_number(fs, "delete_per_100k", "firestore") / 1e5,
        firestore_storage_gib_month=_number(fs, "storage_per_gib_month", "firestore"),
        pubsub_per_tib=_number(ps, "per_tib", "pubsub"),
        pubsub_free_gib_month=_number(ps, "free_gib_per_month", "pubsub"),
        run_instance_vcpu_second=_number(run, "instance_vcpu_second", "cloud_run"),
        run_instance_gib_second=_number(run, "instance_gib_second", "cloud_run"),
        run_request_vcpu_second=_number(run, "request_vcpu_second", "cloud_run"),
        run_request_gib_second=_number(run, "request_gib_second", "cloud_run"),
        run_per_request=_number(run, "per_million_requests", "cloud_run") / 1e6,
        run_billing_granularity_seconds=_number(run, "request_billing_granularity_seconds", "cloud_run"),
        egress_per_gib=_number(run, "internet_egress_per_gib", "cloud_run"),
        scheduler_per_job_month=_number(scheduler, "per_job_month", "cloud_scheduler"),
    )
    price_sources = (
        Source("Firestore, Pub/Sub", prices_json["date"], prices_json["source"]),
        Source("Cloud Run, Cloud Functions gen2, egress", run["date"], run["source"]),
        Source("Cloud Scheduler", scheduler["date"], scheduler["source"]),
    )
    scenario = Scenario(**_fields(Scenario, prices_json["scenario"], "scenario"))
    if scenario.peak_concurrent_share * scenario.peak_hours_per_day > scenario.connected_hours_per_user_per_day:
        raise InputError("scenario: the peak hours alone hold more connected hours than a user has in a day")
    if scenario.peak_hours_per_day >= 24:
        raise InputError("scenario: peak_hours_per_day must leave some off-peak hours")
    deployment = Deployment(**_fields(Deployment, scale["deployment"], "deployment"))
    quotas = Quotas(**_fields(Quotas, scale["quotas"], "quotas"))

    entries: dict[str, Any] = scale["calibration"]
    values: dict[str, float] = {}
    sources: list[Source] = []
    dispatch, per_stream, heartbeat = solve_fanout(entries["fanout_loads"]["loads"])
    values.update(dispatch_us=dispatch, per_stream_us=per_stream, heartbeat_us=heartbeat)
    sources.append(
        Source(
            "dispatch_us / per_stream_us / heartbeat_us",
            f"{dispatch:.1f} / {per_stream:.1f} / {heartbeat:.1f} us CPU",
            entries["fanout_loads"]["source"],
        )
    )
    for name in Calibration.__annotations__:
        if name in values:
            continue
        if name not in entries:
            raise InputError(f"calibration: {name} is missing")
        values[name], source = _calibrated(name, entries[name], root)
        sources.append(source)
    return Inputs(
        prices=prices,
        scenario=scenario,
        deployment=deployment,
        calibration=Calibration(**values),
        quotas=quotas,
        users=tuple(int(u) for u in scale["users"]),
        sweep_users=tuple(int(u) for u in scale["sweep_users"]),
        price_sources=price_sources,
        calibration_sources=tuple(sources),
        quota_source=str(scale["quotas"]["source"]),
        deployment_source=str(scale["deployment"]["source"]),
    )
