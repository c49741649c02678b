"""Where the system stops scaling: each limit's value at a number of users, and the users where it bites.

Every limit is evaluated at the daily peak, with the busiest minutes at
``burst_factor`` times the peak-hour notification rate. A limit "bites" when
its value passes its threshold; limits without a threshold are cost or
latency figures to watch, never reported as biting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bench.scale_inputs import Inputs
from bench.scale_model import (
    AFTER,
    BEFORE,
    ROUTINGS,
    Period,
    channel_capacity,
    channel_deliveries_per_second,
    instance_cpu,
    monthly_bill,
    periods,
)


@dataclass(frozen=True)
class Limit:
    key: str
    name: str
    value: float
    threshold: float | None
    unit: str
    detail: str = ""

    @property
    def bites(self) -> bool:
        return self.threshold is not None and self.value > self.threshold


@dataclass(frozen=True)
class _Spec:
    key: str
    name: str
    unit: str
    measure: Callable[[float, str, Inputs], tuple[float, float | None, str]]


def _peak(users: float, inputs: Inputs) -> Period:
    return periods(users, inputs)[0]


def _run_max(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    peak = _peak(users, inputs)
    return peak.instances, inputs.deployment.stream_max_instances, "deploy.sh --max-instances of the stream service"


def _run_quota(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    peak = _peak(users, inputs)
    return peak.instances, inputs.quotas.cloud_run_max_instances_without_quota_increase, "as remembered"


def _subscriptions(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    per = 1 if routing == BEFORE else 2
    value = inputs.quotas.fixed_subscriptions + per * _peak(users, inputs).instances
    why = f"1 per instance before, 2 after, + {inputs.quotas.fixed_subscriptions}; a rolling deploy briefly doubles it"
    return value, inputs.quotas.pubsub_subscriptions_per_project, why


def _topics(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    per = 0 if routing == BEFORE else 1
    value = inputs.quotas.fixed_topics + per * _peak(users, inputs).instances
    why = f"one inbox per instance after, + {inputs.quotas.fixed_topics}"
    return value, inputs.quotas.pubsub_topics_per_project, why


def _cpu(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    peak = _peak(users, inputs)
    burst = inputs.scenario.burst_factor
    value = instance_cpu(peak, routing, inputs, rate_factor=burst)
    saturating = inputs.scenario.notifications_per_user_per_day * channel_capacity(peak, routing, inputs)
    saturating /= peak.notification_rate * burst
    where = "every instance takes in all the traffic" if routing == BEFORE else "its own users' only"
    return (
        value,
        inputs.quotas.cloud_run_autoscaling_cpu_target,
        (f"{where}; reached at {saturating:,.0f} notifications/user/day at this scale"),
    )


def _index(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    rate = _peak(users, inputs).notification_rate * inputs.scenario.burst_factor
    why = "collection-group expire_at index of notifications and of event_keys, each written once per notification"
    return rate, inputs.quotas.firestore_sequential_index_writes_per_second, why


def _storm(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    """Firestore operations/s when every stream reconnects at once (a network blip, a fleet restart)."""
    peak = _peak(users, inputs)
    dep = inputs.deployment
    # Before: the registry's read + write. After: the registry's one write (a read only over the
    # limit) + the feed head (the user document; the broadcasts' head is known to the process).
    per_connect = 2.0
    value = peak.streams / dep.reconnect_spread_seconds * per_connect
    one = min(peak.streams, dep.stream_concurrency) / dep.reconnect_spread_seconds * per_connect
    ramp = inputs.quotas.firestore_ramp_ops_per_second
    return (
        value,
        None,
        (
            f"{value / ramp:,.0f}x the {ramp:,.0f} ops/s ramp guidance; losing one instance: {one:,.0f} ops/s;"
            " connects that time out answer 503 and clients back off 1-30 s"
        ),
    )


def _ingest(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    cal, dep = inputs.calibration, inputs.deployment
    seconds = cal.ingest_seconds_before if routing == BEFORE else cal.ingest_seconds_after
    rate = _peak(users, inputs).notification_rate * inputs.scenario.burst_factor
    return rate * seconds / dep.ingest_concurrency, dep.ingest_max_instances, f"{seconds * 1000:.0f} ms per event"


def _cold(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    cal, dep = inputs.calibration, inputs.deployment
    seconds = cal.ingest_seconds_before if routing == BEFORE else cal.ingest_seconds_after
    peak, off = periods(users, inputs)
    added = (peak.notification_rate * inputs.scenario.burst_factor - off.notification_rate) * seconds
    added /= dep.ingest_concurrency
    return max(0.0, added), None, f"each holds its first event about {cal.ingest_cold_start_seconds:g} s"


def _registry(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    if routing == BEFORE:
        return 0.0, None, "no registry read before routing"
    rate = _peak(users, inputs).notification_rate * inputs.scenario.burst_factor
    sc = inputs.scenario
    usd = users * sc.notifications_per_user_per_day * sc.days_per_month * inputs.prices.firestore_read
    total = monthly_bill(round(users), AFTER, inputs).total
    return rate, None, f"${usd:,.0f}/month, {usd / total:.1%} of the bill; one more round trip in ingest"


def _deliveries(users: float, routing: str, inputs: Inputs) -> tuple[float, float | None, str]:
    peak = _peak(users, inputs)
    value = channel_deliveries_per_second(peak, routing, inputs, inputs.scenario.burst_factor)
    capacity = channel_capacity(peak, routing, inputs)
    return value, None, f"fleet takes in at most {capacity:,.0f} notifications/s at the CPU target"


SPECS = (
    _Spec("run_max", "Cloud Run max instances (deploy.sh)", "instances", _run_max),
    _Spec("run_quota", "Cloud Run instances without a quota increase", "instances", _run_quota),
    _Spec("subscriptions", "Pub/Sub subscriptions per project", "subscriptions", _subscriptions),
    _Spec("topics", "Pub/Sub topics per project", "topics", _topics),
    _Spec("cpu", "Stream instance CPU at the burst (autoscaling target)", "vCPU", _cpu),
    _Spec("index", "Firestore sequential index writes (expire_at)", "writes/s", _index),
    _Spec("ingest", "Ingest instances at the burst (max instances)", "instances", _ingest),
    _Spec("storm", "Firestore ops when every stream reconnects at once", "ops/s", _storm),
    _Spec("registry", "Registry reads (one per notification)", "reads/s", _registry),
    _Spec("cold", "Ingest cold starts as the burst begins", "instances", _cold),
    _Spec("deliveries", "Channel deliveries to stream instances", "messages/s", _deliveries),
)


def limits(users: float, routing: str, inputs: Inputs) -> list[Limit]:
    out = []
    for spec in SPECS:
        value, threshold, detail = spec.measure(users, routing, inputs)
        out.append(Limit(spec.key, spec.name, value, threshold, spec.unit, detail))
    return out


def limit(key: str, users: float, routing: str, inputs: Inputs) -> Limit:
    spec = next(s for s in SPECS if s.key == key)
    value, threshold, detail = spec.measure(users, routing, inputs)
    return Limit(spec.key, spec.name, value, threshold, spec.unit, detail)


def users_where_it_bites(
    key: str, routing: str, inputs: Inputs, low: int = 100, high: int = 10**10, step: float = 1.25
) -> int | None:
    """The fewest users at which limit ``key`` bites, or None below ``high``.

    A geometric scan finds the first point past the threshold, then bisection
    narrows the bracket (instance counts step, so values are only piecewise
    monotone; the scan keeps bisection inside one rising stretch).
    """
    if limit(key, low, routing, inputs).bites:
        return low
    previous = low
    current = float(low)
    while current < high:
        current = min(float(high), current * step)
        users = math.ceil(current)
        if limit(key, users, routing, inputs).bites:
            lo, hi = previous, users
            while hi - lo > 1:
                middle = (lo + hi) // 2
                if limit(key, middle, routing, inputs).bites:
                    hi = middle
                else:
                    lo = middle
            return hi
        previous = users
    return None


def crossings(inputs: Inputs) -> dict[str, dict[str, int | None]]:
    """For each limit with a threshold, the users where it bites, before and after routing."""
    keys = [s.key for s in SPECS if s.measure(1000, BEFORE, inputs)[1] is not None]
    return {k: {r: users_where_it_bites(k, r, inputs) for r in ROUTINGS} for k in keys}


def next_limit(users: int, routing: str, table: dict[str, dict[str, int | None]]) -> tuple[str, int] | None:
    """The first limit still ahead of ``users`` (the smallest crossing above it)."""
    ahead = [(at, key) for key, by in table.items() if (at := by[routing]) is not None and at > users]
    if not ahead:
        return None
    at, key = min(ahead)
    return key, at
