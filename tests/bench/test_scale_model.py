"""The scale model's arithmetic on small inputs computed by hand, and its inputs against deploy.sh."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from bench.scale import main as scale_main
from bench.scale import write_doc
from bench.scale_inputs import (
    ROOT,
    Calibration,
    Deployment,
    InputError,
    Inputs,
    Prices,
    Quotas,
    Scenario,
    load_inputs,
    solve_fanout,
)
from bench.scale_limits import limit, users_where_it_bites
from bench.scale_model import (
    AFTER,
    BEFORE,
    Bill,
    _billed_seconds,
    channel_deliveries_per_notification,
    distinct_instances,
    instance_cpu,
    monthly_bill,
    periods,
)

# A flat day: 12 connected hours, half the users connected in every hour, 24 notifications
# per user per day. With 3,600 users: 1,800 streams, 1 notification/s all day, 2 instances.
SCENARIO = Scenario(
    notifications_per_user_per_day=24,
    days_per_month=30,
    connected_hours_per_user_per_day=12,
    connects_per_connected_hour=1,
    retention_days=30,
    stored_bytes_per_notification=1024,
    peak_concurrent_share=0.5,
    peak_hours_per_day=12,
    second_stream_share=0.0,
    live_share_of_notifications=1.0,
    burst_factor=1.0,
)
DEPLOYMENT = Deployment(
    stream_concurrency=1000,
    stream_min_instances=1,
    stream_max_instances=20,
    stream_vcpu=1.0,
    stream_memory_gib=1.0,
    heartbeat_seconds=30,
    reconnect_spread_seconds=0.5,
    max_streams_per_user=3,
    ingest_memory_gib=0.5,
    ingest_vcpu=0.5,
    ingest_max_instances=100,
    ingest_concurrency=1,
    cleanup_memory_gib=0.5,
    cleanup_vcpu=0.5,
    cleanup_interval_seconds=300,
    scheduler_jobs=1,
)
CALIBRATION = Calibration(
    recv_us_before=100.0,
    recv_us_after=100.0,
    dispatch_us=0.0,
    per_stream_us=0.0,
    heartbeat_us=0.0,
    rss_kb_per_stream=17.0,
    base_rss_mb=74.0,
    pubsub_billable_kb_per_message=1.0,
    firestore_writes_per_notification=2,
    ttl_deletes_per_notification=2,
    connect_reads_before=2,
    connect_reads_after=3,
    cleanup_reads_per_run=0,
    ingest_seconds_before=0.05,
    ingest_seconds_after=0.05,
    ingest_cold_start_seconds=2.5,
    cleanup_seconds_per_run=1.0,
    notification_wire_bytes=0,
    heartbeat_wire_bytes=0,
    connect_wire_bytes=0,
)
PRICES = Prices(
    firestore_read=1e-6,
    firestore_write=2e-6,
    firestore_delete=1e-7,
    firestore_storage_gib_month=0.0,
    pubsub_per_tib=40.0,
    pubsub_free_gib_month=0.0,
    run_instance_vcpu_second=1e-5,
    run_instance_gib_second=1e-6,
    run_request_vcpu_second=2e-5,
    run_request_gib_second=2e-6,
    run_per_request=4e-7,
    run_billing_granularity_seconds=0.1,
    egress_per_gib=0.0,
    scheduler_per_job_month=0.1,
)
QUOTAS = Quotas(
    pubsub_topics_per_project=10_000,
    pubsub_subscriptions_per_project=10_000,
    pubsub_subscriptions_per_topic=10_000,
    fixed_topics=3,
    fixed_subscriptions=2,
    firestore_document_writes_per_second=1,
    firestore_sequential_index_writes_per_second=500,
    firestore_ramp_ops_per_second=500,
    cloud_run_autoscaling_cpu_target=0.6,
    cloud_run_max_instances_without_quota_increase=1000,
)
INPUTS = Inputs(
    prices=PRICES,
    scenario=SCENARIO,
    deployment=DEPLOYMENT,
    calibration=CALIBRATION,
    quotas=QUOTAS,
    users=(3600,),
    sweep_users=(3600,),
    price_sources=(),
    calibration_sources=(),
    quota_source="",
    deployment_source="",
)
MONTH = 30 * 86_400


def _item(bill: Bill, prefix: str) -> float:
    return next(i.quantity for i in bill.items if i.item.startswith(prefix))


def _usd(bill: Bill, prefix: str) -> float:
    return next(i.usd for i in bill.items if i.item.startswith(prefix))


def test_a_flat_day_gives_the_hand_computed_fleet() -> None:
    peak, off = periods(3600, INPUTS)
    for period in (peak, off):
        assert period.users == pytest.approx(1800)
        assert period.streams == pytest.approx(1800)
        assert period.instances == 2
        assert period.notification_rate == pytest.approx(1.0)


def test_the_off_peak_level_keeps_each_users_connected_hours() -> None:
    inputs = replace(
        INPUTS,
        scenario=replace(SCENARIO, connected_hours_per_user_per_day=8, peak_hours_per_day=6, second_stream_share=0.2),
    )
    peak, off = periods(10_000, inputs)
    # 5,000 users for 6 h, then (8 - 0.5 x 6) / 18 of them for 18 h: 80,000 connected user-hours a day.
    assert peak.users == pytest.approx(5000)
    assert off.users == pytest.approx(10_000 * 5 / 18)
    assert peak.users * 6 + off.users * 18 == pytest.approx(10_000 * 8)
    assert peak.streams == pytest.approx(6000)
    assert peak.instances == 6
    assert off.instances == 4  # 3,333.3 streams


def test_the_monthly_bill_matches_the_hand_computation() -> None:
    notifications = 3600 * 24 * 30  # 2,592,000
    connects = 1800 * 24 * 30  # stream-hours x 1 connect an hour
    cleanup_runs = MONTH / 300  # 8,640, each reading 2 records per instance (2 instances)
    before, after = monthly_bill(3600, BEFORE, INPUTS), monthly_bill(3600, AFTER, INPUTS)

    # Before: worker publish + push + 1 channel publish + 1 delivery per instance (2) = 5 messages.
    assert _item(before, "Pub/Sub") * 2**30 == pytest.approx(5 * notifications * 1000)
    # After: the user's streams are on one instance: 1 publish + 1 delivery = 4 messages.
    assert _item(after, "Pub/Sub") * 2**30 == pytest.approx(4 * notifications * 1000)
    assert _usd(before, "Pub/Sub") == pytest.approx(5 * notifications * 1000 / 2**40 * 40)

    assert _item(before, "Firestore document reads") == pytest.approx(2 * connects + 4 * cleanup_runs)
    assert _item(after, "Firestore document reads") == pytest.approx(notifications + 3 * connects + 4 * cleanup_runs)
    heartbeats = 2 * MONTH / 30
    assert _item(after, "Firestore document writes") == pytest.approx(2 * notifications + connects + heartbeats)
    assert _item(after, "Firestore deletes") == pytest.approx(connects + 2 * notifications)

    instance_seconds = 2 * MONTH
    assert _item(after, "Cloud Run stream") == pytest.approx(instance_seconds / 3600)
    assert _usd(after, "Cloud Run stream") == pytest.approx(instance_seconds * (1e-5 + 1e-6))
    # 50 ms billed as 100 ms, at 0.5 vCPU and 0.5 GiB, plus the request fee.
    per_event = 0.1 * (0.5 * 2e-5 + 0.5 * 2e-6) + 4e-7
    assert _usd(after, "Ingest") == pytest.approx(notifications * per_event)
    assert _usd(after, "Cloud Scheduler") == pytest.approx(0.1)
    assert after.total == pytest.approx(sum(i.usd for i in after.items))


def test_doubling_the_instances_doubles_deliveries_before_routing_only() -> None:
    for instances in (2, 7, 40):
        before = channel_deliveries_per_notification(BEFORE, instances, INPUTS)
        doubled = channel_deliveries_per_notification(BEFORE, 2 * instances, INPUTS)
        assert doubled == 2 * before
        assert channel_deliveries_per_notification(AFTER, instances, INPUTS) == 1.0
        assert channel_deliveries_per_notification(AFTER, 2 * instances, INPUTS) == 1.0
    # Ten times the users: ten times the notifications and instances (4,000 users: 2 instances of
    # 1,000 streams; 40,000: 20), so 100x the channel deliveries before routing and 10x after.
    small, large = monthly_bill(4000, BEFORE, INPUTS), monthly_bill(40_000, BEFORE, INPUTS)
    small_after, large_after = monthly_bill(4000, AFTER, INPUTS), monthly_bill(40_000, AFTER, INPUTS)
    notifications = 4000 * 24 * 30
    # Messages other than the deliveries to stream instances: worker publish, push, channel publish.
    channel = _item(small, "Pub/Sub") * 2**30 / 1000 - 3 * notifications
    assert channel == pytest.approx(2 * notifications)
    assert _item(large, "Pub/Sub") * 2**30 / 1000 - 30 * notifications == pytest.approx(100 * channel)
    assert _item(large_after, "Pub/Sub") == pytest.approx(10 * _item(small_after, "Pub/Sub"))


def test_distinct_instances_matches_every_placement_of_a_second_stream() -> None:
    for instances in (1, 2, 4, 9):
        placements = list(itertools.product(range(instances), repeat=2))
        mean = sum(len(set(p)) for p in placements) / len(placements)
        assert distinct_instances(1.0, instances) == pytest.approx(mean)
        # A share of users with a second stream: a mix of 1 and that mean.
        assert distinct_instances(0.25, instances) == pytest.approx(0.75 + 0.25 * mean)


def test_receive_cpu_grows_with_the_fleet_before_routing_and_stays_flat_after() -> None:
    small = periods(4000, INPUTS)[0]  # 2 instances of 1,000 streams, 4,000 / 3,600 notifications/s
    large = periods(400_000, INPUTS)[0]  # 200 instances of 1,000 streams, 100x the rate
    assert (small.instances, large.instances) == (2, 200)
    # Before: every instance receives the whole system's rate at 100 us each.
    assert instance_cpu(small, BEFORE, INPUTS) == pytest.approx(4000 / 3600 * 100e-6)
    assert instance_cpu(large, BEFORE, INPUTS) == pytest.approx(400_000 / 3600 * 100e-6)
    # After: its own users' share, the same at both sizes.
    assert instance_cpu(small, AFTER, INPUTS) == pytest.approx(4000 / 3600 / 2 * 100e-6)
    assert instance_cpu(large, AFTER, INPUTS) == pytest.approx(instance_cpu(small, AFTER, INPUTS))


def test_cpu_before_routing_bites_where_the_system_rate_reaches_the_target() -> None:
    # 0.6 vCPU at 100 us per message = 6,000 messages/s = 6,000 x 3,600 users (1 notification/s each 3,600).
    at = users_where_it_bites("cpu", BEFORE, INPUTS)
    assert at is not None
    assert limit("cpu", at, BEFORE, INPUTS).bites
    assert not limit("cpu", at - 1, BEFORE, INPUTS).bites
    assert at == pytest.approx(6000 * 3600, rel=1e-6)
    assert users_where_it_bites("cpu", AFTER, INPUTS) is None


def test_cloud_run_max_instances_bites_past_its_streams() -> None:
    # 20 instances x 1,000 streams; half the users connected: 40,000 users fill them.
    assert users_where_it_bites("run_max", BEFORE, INPUTS) == 40_001
    assert limit("run_max", 40_000, AFTER, INPUTS).value == 20


def test_subscriptions_bite_at_half_the_instances_after_routing() -> None:
    before = users_where_it_bites("subscriptions", BEFORE, INPUTS)
    after = users_where_it_bites("subscriptions", AFTER, INPUTS)
    # 2 fixed; 1 per instance before (9,998 instances), 2 after (4,999 instances).
    assert limit("subscriptions", 9_998 * 2000, BEFORE, INPUTS).value == 10_000
    assert before == 9_998 * 2000 + 1
    assert after == 4_999 * 2000 + 1


def test_billing_rounds_up_to_the_granularity() -> None:
    assert _billed_seconds(0.05, 0.1) == pytest.approx(0.1)
    assert _billed_seconds(0.1, 0.1) == pytest.approx(0.1)
    assert _billed_seconds(0.1001, 0.1) == pytest.approx(0.2)


def test_fanout_costs_are_recovered_from_three_loads() -> None:
    dispatch, per_stream, heartbeat = 60.0, 20.0, 30.0

    def load(streams: int, rate: int, fanout: int) -> dict[str, float]:
        cpu = rate * dispatch + rate * fanout * per_stream + streams / 10 * heartbeat
        return {
            "streams": streams,
            "rate": rate,
            "streams_per_notification": fanout,
            "heartbeat_seconds": 10,
            "cpu_us_per_delivery": cpu / (rate * fanout),
        }

    solved = solve_fanout([load(1000, 1000, 1), load(10_000, 1000, 1), load(1000, 500, 10)])
    assert solved == pytest.approx((dispatch, per_stream, heartbeat))
    with pytest.raises(InputError):
        solve_fanout([load(1000, 1000, 1), load(1000, 1000, 1), load(1000, 500, 10)])


def test_the_reference_run_splits_into_the_hand_derived_costs() -> None:
    # docs/benchmarks.md: 93, 122 and 31.1 us per delivery; by hand: 900 h = 29,000 (a, b),
    # then f + 10 g = 304.6 (c) and f + g = 89.8.
    cal = load_inputs().calibration
    assert cal.heartbeat_us == pytest.approx(32.2, abs=0.1)
    assert cal.per_stream_us == pytest.approx(23.9, abs=0.1)
    assert cal.dispatch_us == pytest.approx(65.9, abs=0.1)


def _scale_json_with(tmp_path: Path, results: object | None) -> tuple[Path, Path]:
    scale = json.loads((ROOT / "bench" / "scale.json").read_text())
    if results is not None:
        (tmp_path / "bench").mkdir()
        (tmp_path / "bench" / "channel_receive.json").write_text(json.dumps(results))
    path = tmp_path / "scale.json"
    path.write_text(json.dumps(scale))
    return ROOT / "bench" / "prices.json", path


def test_a_measured_results_file_replaces_the_placeholder(tmp_path: Path) -> None:
    receivers = [{"mode": "client", "cpu_us_per_message": 117.0}, {"mode": "lean", "cpu_us_per_message": 41.5}]
    results = {"messages": 20_000, "receivers": receivers}
    prices, scale = _scale_json_with(tmp_path, results)
    inputs = load_inputs(prices, scale, root=tmp_path)
    assert (inputs.calibration.recv_us_before, inputs.calibration.recv_us_after) == (117.0, 41.5)
    source = next(s for s in inputs.calibration_sources if s.name == "recv_us_after")
    assert source.source.startswith("measured: bench/channel_receive.json")


def test_without_results_the_placeholder_is_used_and_says_so(tmp_path: Path) -> None:
    prices, scale = _scale_json_with(tmp_path, None)
    inputs = load_inputs(prices, scale, root=tmp_path)
    assert inputs.calibration.recv_us_after == 89.0
    source = next(s for s in inputs.calibration_sources if s.name == "recv_us_after")
    assert "PLACEHOLDER" in source.source
    assert "bench/channel_receive.json" in source.source


def test_a_peak_holding_more_hours_than_a_user_has_is_refused(tmp_path: Path) -> None:
    prices = json.loads((ROOT / "bench" / "prices.json").read_text())
    prices["scenario"]["peak_concurrent_share"] = 1.0
    prices["scenario"]["peak_hours_per_day"] = 12  # 12 connected hours at the peak alone, 8 in the day
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    with pytest.raises(InputError, match="peak hours"):
        load_inputs(path)


def _flag(block: str, name: str) -> str:
    match = re.search(rf"--{name}=(\S+)", block)
    assert match, name
    return match.group(1)


def _function(text: str, name: str) -> str:
    return text.split(f"{name}() {{", 1)[1].split("\n}", 1)[0]


def test_the_deployment_inputs_are_what_deploy_sh_deploys() -> None:
    text = (ROOT / "deploy.sh").read_text()
    dep = load_inputs().deployment
    stream, ingest, cleanup = (_function(text, n) for n in ("deploy_stream", "deploy_ingest", "deploy_cleanup"))
    assert int(_flag(stream, "concurrency")) == dep.stream_concurrency
    assert int(_flag(stream, "min-instances")) == dep.stream_min_instances
    assert int(_flag(stream, "max-instances")) == dep.stream_max_instances
    assert float(_flag(stream, "cpu")) == dep.stream_vcpu
    assert _flag(stream, "memory") == f"{dep.stream_memory_gib:g}Gi"
    assert "--no-cpu-throttling" in stream
    assert int(_flag(ingest, "max-instances")) == dep.ingest_max_instances
    assert _flag(ingest, "memory") == f"{dep.ingest_memory_gib * 1024:g}Mi"
    assert "--concurrency" not in ingest  # gen2's default: one event per instance
    assert dep.ingest_concurrency == 1
    assert _flag(cleanup, "memory") == f"{dep.cleanup_memory_gib * 1024:g}Mi"
    assert "--schedule='*/5 * * * *'" in cleanup
    assert dep.cleanup_interval_seconds == 300


def test_the_docs_section_is_replaced_between_its_markers(tmp_path: Path) -> None:
    page = tmp_path / "scale.md"
    page.write_text("# Title\n\nprose before\n\n<!-- scale:start -->\nold\n<!-- scale:end -->\n\nprose after\n")
    write_doc("new tables\n", page)
    assert page.read_text() == (
        "# Title\n\nprose before\n\n<!-- scale:start -->\nnew tables\n<!-- scale:end -->\nprose after\n"
    )


def test_the_command_prints_every_scale_before_and_after(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale_main(["--no-write"]) == 0
    out = capsys.readouterr().out
    for heading in ("#### 10,000 users", "#### 100,000 users", "#### 1,000,000 users", "#### Next limit"):
        assert heading in out
    assert "PLACEHOLDER" in out or "measured: bench/channel_receive.json" in out
