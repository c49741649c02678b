"""Fleet size, per-instance CPU and the monthly bill at a number of users, before and after routing.

The day has two levels: ``peak_hours_per_day`` at the peak concurrency and the
rest of the day at the level that keeps each user's connected hours.
Notifications follow connected users. Before routing every stream instance
receives every channel message (one subscription each on one topic); after,
a notification goes to the instances that hold its user's streams, after one
registry read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.scale_inputs import Inputs

BEFORE = "before"
AFTER = "after"
ROUTINGS = (BEFORE, AFTER)
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Period:
    name: str
    hours_per_day: float
    users: float  # connected users
    streams: float
    instances: int
    notification_rate: float  # notifications/s, whole system


def streams_per_user(inputs: Inputs) -> float:
    return 1.0 + inputs.scenario.second_stream_share


def instances_for(streams: float, inputs: Inputs) -> int:
    """Cloud Run instances holding ``streams`` at the configured concurrency, never below the minimum."""
    dep = inputs.deployment
    # The small slack keeps 6000.0000001 streams (float sums) from asking for a 7th instance.
    needed = math.ceil(streams / dep.stream_concurrency - 1e-9)
    return max(dep.stream_min_instances, needed)


def periods(users: float, inputs: Inputs) -> tuple[Period, Period]:
    """The peak and off-peak levels of one day."""
    sc = inputs.scenario
    per_user_rate = sc.notifications_per_user_per_day / sc.connected_hours_per_user_per_day / 3600
    off_hours = 24 - sc.peak_hours_per_day
    peak_users = users * sc.peak_concurrent_share
    off_users = users * (sc.connected_hours_per_user_per_day - sc.peak_concurrent_share * sc.peak_hours_per_day)
    off_users /= off_hours
    made = []
    for name, hours, connected in (("peak", sc.peak_hours_per_day, peak_users), ("off-peak", off_hours, off_users)):
        streams = connected * streams_per_user(inputs)
        made.append(Period(name, hours, connected, streams, instances_for(streams, inputs), connected * per_user_rate))
    return made[0], made[1]


def distinct_instances(second_stream_share: float, instances: int) -> float:
    """Expected instances holding a connected user's streams when a second stream lands anywhere at random."""
    return 1.0 + second_stream_share * (1.0 - 1.0 / max(1, instances))


def channel_deliveries_per_notification(routing: str, instances: int, inputs: Inputs) -> float:
    """Channel messages the stream fleet receives per notification."""
    if routing == BEFORE:
        return float(instances)
    sc = inputs.scenario
    return sc.live_share_of_notifications * distinct_instances(sc.second_stream_share, instances)


def channel_publishes_per_notification(routing: str, instances: int, inputs: Inputs) -> float:
    """Channel publish requests per notification: one topic before, one inbox topic per instance after."""
    if routing == BEFORE:
        return 1.0
    return channel_deliveries_per_notification(AFTER, instances, inputs)


def instance_cpu(period: Period, routing: str, inputs: Inputs, rate_factor: float = 1.0) -> float:
    """Share of one vCPU a stream instance spends on channel messages, deliveries and heartbeats."""
    cal = inputs.calibration
    rate = period.notification_rate * rate_factor
    instances = period.instances
    # Messages of users this instance holds: the same count with or without routing.
    held = rate * channel_deliveries_per_notification(AFTER, instances, inputs) / instances
    if routing == BEFORE:
        received, recv_us = rate, cal.recv_us_before
    else:
        received, recv_us = held, cal.recv_us_after
    written = rate * inputs.scenario.live_share_of_notifications * streams_per_user(inputs) / instances
    heartbeats = period.streams / instances / inputs.deployment.heartbeat_seconds
    # The dispatch figure was measured through the bench's injection route (its own HTTP and JSON work
    # included) and is added to the receive for held messages: an upper bound for the hub's work.
    cpu_us = received * recv_us + held * cal.dispatch_us + written * cal.per_stream_us + heartbeats * cal.heartbeat_us
    return cpu_us / 1e6


def channel_capacity(period: Period, routing: str, inputs: Inputs) -> float:
    """Notifications/s the fleet of ``period`` takes in before an instance reaches the autoscaling CPU target."""
    target = inputs.quotas.cloud_run_autoscaling_cpu_target
    idle = instance_cpu(period, routing, inputs, rate_factor=0.0)
    per_notification = instance_cpu(period, routing, inputs, rate_factor=1.0) - idle
    if period.notification_rate <= 0 or per_notification <= 0:
        return math.inf
    return max(0.0, target - idle) / (per_notification / period.notification_rate)


def rss_mb(streams_per_instance: float, inputs: Inputs) -> float:
    cal = inputs.calibration
    return cal.base_rss_mb + streams_per_instance * cal.rss_kb_per_stream / 1000


@dataclass(frozen=True)
class Item:
    item: str
    quantity: float
    unit: str
    usd: float


@dataclass(frozen=True)
class Bill:
    users: int
    routing: str
    items: tuple[Item, ...]

    @property
    def total(self) -> float:
        return sum(i.usd for i in self.items)

    def usd(self, prefix: str) -> float:
        return sum(i.usd for i in self.items if i.item.startswith(prefix))


@dataclass(frozen=True)
class Operations:
    """Billed operations per notification and per connection (connect + disconnect)."""

    notification_reads: float
    notification_writes: float
    notification_publishes: float  # the worker's, plus the channel's
    notification_deliveries: float  # the push to ingest, plus the stream instances'
    connection_reads: float
    connection_writes: float
    connection_deletes: float


def operations(routing: str, instances: int, inputs: Inputs) -> Operations:
    cal = inputs.calibration
    share_last = 1.0 / streams_per_user(inputs)  # disconnects that end a user's last stream delete the document
    return Operations(
        notification_reads=0.0 if routing == BEFORE else 1.0,
        notification_writes=cal.firestore_writes_per_notification,
        notification_publishes=1.0 + channel_publishes_per_notification(routing, instances, inputs),
        notification_deliveries=1.0 + channel_deliveries_per_notification(routing, instances, inputs),
        connection_reads=cal.connect_reads_before if routing == BEFORE else cal.connect_reads_after,
        connection_writes=1.0 + (1.0 - share_last),
        connection_deletes=share_last,
    )


def _billed_seconds(seconds: float, granularity: float) -> float:
    return math.ceil(seconds / granularity - 1e-9) * granularity


def monthly_bill(users: int, routing: str, inputs: Inputs) -> Bill:
    sc, dep, cal, pr = inputs.scenario, inputs.deployment, inputs.calibration, inputs.prices
    days = sc.days_per_month
    day = periods(users, inputs)
    per_day = [p.hours_per_day * 3600 for p in day]
    notifications = sum(p.notification_rate * s for p, s in zip(day, per_day, strict=True)) * days
    instance_seconds = sum(p.instances * s for p, s in zip(day, per_day, strict=True)) * days
    stream_seconds = sum(p.streams * s for p, s in zip(day, per_day, strict=True)) * days
    connects = stream_seconds / 3600 * sc.connects_per_connected_hour
    # Channel traffic depends on the instances of the moment, so it is summed per period.
    channel_publishes = channel_deliveries = 0.0
    for period, seconds in zip(day, per_day, strict=True):
        sent = period.notification_rate * seconds * days
        channel_publishes += sent * channel_publishes_per_notification(routing, period.instances, inputs)
        channel_deliveries += sent * channel_deliveries_per_notification(routing, period.instances, inputs)

    ops = operations(routing, 1, inputs)
    cleanup_runs = days * SECONDS_PER_DAY / dep.cleanup_interval_seconds
    mean_instances = instance_seconds / (days * SECONDS_PER_DAY)
    reads = (
        notifications * ops.notification_reads
        + connects * ops.connection_reads
        + cleanup_runs * (cal.cleanup_reads_per_run + 2 * mean_instances)
    )
    writes = (
        notifications * cal.firestore_writes_per_notification
        + connects * ops.connection_writes
        + instance_seconds / dep.heartbeat_seconds
    )
    deletes = connects * ops.connection_deletes + notifications * cal.ttl_deletes_per_notification
    stored_gib = users * sc.notifications_per_user_per_day * sc.retention_days * sc.stored_bytes_per_notification
    stored_gib /= 2**30
    # The worker's publish and the push to ingest, then the channel's publishes and deliveries.
    messages = 2 * notifications + channel_publishes + channel_deliveries
    pubsub_gib = messages * cal.pubsub_billable_kb_per_message * 1000 / 2**30
    billable_pubsub_gib = max(0.0, pubsub_gib - pr.pubsub_free_gib_month)
    instance_rate = dep.stream_vcpu * pr.run_instance_vcpu_second + dep.stream_memory_gib * pr.run_instance_gib_second
    egress_bytes = (
        notifications * sc.live_share_of_notifications * streams_per_user(inputs) * cal.notification_wire_bytes
        + stream_seconds / dep.heartbeat_seconds * cal.heartbeat_wire_bytes
        + connects * cal.connect_wire_bytes
    )
    egress_gib = egress_bytes / 2**30
    ingest_seconds = cal.ingest_seconds_before if routing == BEFORE else cal.ingest_seconds_after
    ingest_billed = _billed_seconds(ingest_seconds, pr.run_billing_granularity_seconds)
    cleanup_billed = _billed_seconds(cal.cleanup_seconds_per_run, pr.run_billing_granularity_seconds)

    def request_based(invocations: float, seconds: float, vcpu: float, gib: float) -> float:
        rate = vcpu * pr.run_request_vcpu_second + gib * pr.run_request_gib_second
        return invocations * (seconds * rate + pr.run_per_request)

    items = (
        Item("Firestore document reads", reads, "reads", reads * pr.firestore_read),
        Item("Firestore document writes", writes, "writes", writes * pr.firestore_write),
        Item("Firestore deletes (disconnects, TTL expiry)", deletes, "deletes", deletes * pr.firestore_delete),
        Item("Firestore storage", stored_gib, "GiB", stored_gib * pr.firestore_storage_gib_month),
        Item("Pub/Sub throughput", pubsub_gib, "GiB", billable_pubsub_gib / 1024 * pr.pubsub_per_tib),
        Item("Cloud Run stream service", instance_seconds / 3600, "instance-hours", instance_seconds * instance_rate),
        Item("Cloud Run egress (SSE)", egress_gib, "GiB", egress_gib * pr.egress_per_gib),
        Item(
            "Ingest function (gen2)",
            notifications,
            "invocations",
            request_based(notifications, ingest_billed, dep.ingest_vcpu, dep.ingest_memory_gib),
        ),
        Item(
            "Cleanup function (gen2)",
            cleanup_runs,
            "invocations",
            request_based(cleanup_runs, cleanup_billed, dep.cleanup_vcpu, dep.cleanup_memory_gib),
        ),
        Item("Cloud Scheduler", dep.scheduler_jobs, "job-months", dep.scheduler_jobs * pr.scheduler_per_job_month),
    )
    return Bill(users, routing, items)


def channel_deliveries_per_second(period: Period, routing: str, inputs: Inputs, rate_factor: float = 1.0) -> float:
    per = channel_deliveries_per_notification(routing, period.instances, inputs)
    return period.notification_rate * rate_factor * per
