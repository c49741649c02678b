"""Tier 1/2: one fan-out load against one server, measured end to end."""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.cost_hook import read_profile
from bench.loadgen import LoopLag, StreamPool, drain, own_cpu_seconds, summary_ms
from bench.publishers import InjectPublisher, NchanPublisher, Publisher
from bench.servers import Server


@dataclass(frozen=True)
class Load:
    name: str
    streams: int
    users: int
    rate: float  # notifications per second (each reaches every stream of its user)
    duration: float  # seconds of publishing

    @property
    def label(self) -> str:
        return f"({self.name}) {self.streams:,} streams / {self.users:,} users at {self.rate:,.0f}/s"


FULL_LOADS = (
    Load("a", 1000, 1000, 1000, 20),
    Load("b", 10000, 10000, 1000, 20),
    Load("c", 1000, 100, 500, 20),
)
QUICK_LOADS = (
    Load("a", 200, 200, 200, 5),
    Load("b", 1000, 1000, 200, 5),
    Load("c", 200, 20, 100, 5),
)


@dataclass
class Outcome:
    result: dict[str, Any]
    latencies: list[float]  # seconds, for the plot


def _by_second(times: list[float], latencies: list[float], start: float) -> list[float]:
    worst: dict[int, float] = {}
    for at, latency in zip(times, latencies, strict=True):
        second = int(at - start)
        worst[second] = max(worst.get(second, 0.0), latency)
    return [round(worst.get(s, 0.0) * 1000, 1) for s in range(max(worst) + 1)] if worst else []


BURST_STREAMS = 1000


def _gc_stats(pauses: list[tuple[float, float, int]]) -> dict[str, Any]:
    gen2 = [g[1] - g[0] for g in pauses if g[2] == 2]
    return {
        "gen1_2_pauses": len(pauses),
        "gen2_pauses": len(gen2),
        "gen2_max_ms": round(max(gen2, default=0.0) * 1000, 1),
        "gen2_total_ms": round(sum(gen2) * 1000, 1),
        "max_ms": round(max((g[1] - g[0] for g in pauses), default=0.0) * 1000, 1),
    }


def _attribute(
    times: list[float],
    latencies: list[float],
    connects: list[tuple[float, float]],
    profile: dict[str, list[list[float]]],
    start: float,
    end: float,
) -> dict[str, Any]:
    """How many slow deliveries (> 50 ms) and slow connects (> 200 ms) came within 1 s after the
    server wrote a heartbeat to every stream, or overlapped one of its garbage collections."""
    gcs = sorted((p[0], p[0] + p[1], int(p[2])) for p in profile.get("gc", []))
    connecting = (min((b for b, _ in connects), default=start), start)
    # A burst: one call that heartbeats at least 1,000 streams (the hub may spread them over slices).
    bursts = [p for p in profile.get("heartbeats", []) if p[2] >= BURST_STREAMS]
    beats = sorted(p[0] for p in bursts)
    calls = [p for p in profile.get("heartbeats", []) if start <= p[0] <= end]
    beat_calls = [p[1] for p in calls]

    def after_beat(at: float) -> bool:
        i = bisect.bisect_left(beats, at - 1.0)
        return i < len(beats) and beats[i] <= at

    def in_gc(begin: float, at: float) -> bool:
        j = bisect.bisect_left(gcs, (begin - 5.0,))
        return any(g_start <= at and g_end >= begin for g_start, g_end, _ in gcs[j:] if g_start <= at)

    def in_gen2(begin: float, at: float) -> bool:
        return any(g_start <= at and g_end >= begin for g_start, g_end, gen in gcs if gen == 2)

    slow = [(at - latency, at) for at, latency in zip(times, latencies, strict=True) if latency > 0.05]
    slow_connects = [(begin, at) for begin, at in connects if at - begin > 0.2]
    window = [g for g in gcs if start <= g[0] <= end]
    return {
        "slow_deliveries_over_50ms": len(slow),
        "slow_deliveries_within_1s_after_heartbeat_burst": sum(1 for _, at in slow if after_beat(at)),
        "slow_deliveries_overlapping_gc": sum(1 for begin, at in slow if in_gc(begin, at)),
        "slow_connects_over_200ms": len(slow_connects),
        "slow_connects_within_1s_after_heartbeat_burst": sum(1 for _, at in slow_connects if after_beat(at)),
        "slow_connects_overlapping_gc": sum(1 for begin, at in slow_connects if in_gc(begin, at)),
        "slow_connects_overlapping_gen2_gc": sum(1 for begin, at in slow_connects if in_gen2(begin, at)),
        "gc_while_connecting": _gc_stats([g for g in gcs if connecting[0] <= g[0] <= connecting[1]]),
        "heartbeat_calls_while_publishing": len(calls),
        "heartbeat_bursts_while_publishing": sum(1 for p in calls if p[2] >= BURST_STREAMS),
        "heartbeat_streams_per_call_max": int(max((p[2] for p in calls), default=0)),
        "heartbeat_call_max_ms": round(max(beat_calls, default=0.0) * 1000, 1),
        "gc_pauses_gen1_2_while_publishing": len(window),
        "gc_pause_max_ms": round(max((g[1] - g[0] for g in window), default=0.0) * 1000, 1),
        "gc_pause_total_ms": round(sum(g[1] - g[0] for g in window) * 1000, 1),
    }


async def run_load(
    kind: str,
    server: Server,
    load: Load,
    *,
    connect_rate: float,
    path_for: Callable[[str], str],
    drain_timeout: float = 15.0,
    profile_dir: str | None = None,
) -> Outcome:
    """``kind`` "inject" (our service or the stand-in) or "nchan" decides how messages are published."""
    pool = StreamPool("127.0.0.1", server.port)
    load_before = [round(x, 2) for x in os.getloadavg()]
    users = [f"bu{n:05d}" for n in range(load.users)]
    stream_users = [users[n % load.users] for n in range(load.streams)]
    await asyncio.sleep(0.5)
    rss_before = server.rss_bytes()

    connect_lag = LoopLag()
    connect_lag.start()
    await pool.open(stream_users, path_for, connect_rate)
    connect_loop_lag = await connect_lag.stop()
    established = pool.established()
    # Let the server finish whatever follows the response head (subscription, first event).
    await asyncio.sleep(1.0)
    rss_after = server.rss_bytes()

    publisher: Publisher
    if kind == "nchan":
        publisher = NchanPublisher(pool, users, load.rate, "127.0.0.1", server.port)
    else:
        publisher = InjectPublisher(pool, users, load.rate, "127.0.0.1", server.port)
    lag = LoopLag()
    server_cpu0, client_cpu0, wall0 = server.cpu_seconds(), own_cpu_seconds(), time.monotonic()
    lag.start()
    publish_started = time.time()
    await publisher.run(load.duration)
    expected = pool.expected(publisher.per_user)
    drained = await drain(pool.delivered, expected, lambda: [server.cpu_seconds()], drain_timeout)
    wall = time.monotonic() - wall0
    server_cpu, client_cpu = drained.cpu[0] - server_cpu0, own_cpu_seconds() - client_cpu0
    loop_lag = await lag.stop()

    delivered = pool.delivered()
    errors = Counter(s.error for s in pool.streams if s.error)
    connect = [s.connected_at - s.started for s in established if s.connected_at is not None]
    closed_early = sum(1 for s in established if s.closed)
    result: dict[str, Any] = {
        "load": asdict(load),
        "label": load.label,
        "server": server.name,
        "established": len(established),
        "connect_errors": dict(errors.most_common(5)),
        "closed_during_run": closed_early,
        "notifications_sent": publisher.sent,
        "publish_errors": publisher.errors,
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": pool.lost(publisher.per_user),
        "duplicated": pool.duplicates(),
        "misrouted": pool.misrouted,
        "unknown": pool.unknown,
        "heartbeats_received": sum(s.heartbeats for s in pool.streams),
        "latency_ms": summary_ms(pool.latencies),
        "connect_ms": summary_ms(connect),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_connect_mb": round(rss_after / 2**20, 1),
        "rss_per_stream_kb": round((rss_after - rss_before) / max(1, len(established)) / 1024, 2),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_1000_deliveries": round(server_cpu * 1000 / max(1, delivered) * 1000, 1),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "client_loop_lag_ms": loop_lag,
        "client_loop_lag_while_connecting_ms": connect_loop_lag,
        "publish_catch_up_max": publisher.behind_max,
        # Spikes that recur every heartbeat interval show up here.
        "max_latency_ms_by_second": _by_second(pool.receive_times, pool.latencies, publish_started),
        "measured_seconds": round(wall, 1),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if profile_dir is not None:
        await asyncio.sleep(0.7)  # the server's hook writes its profile every 0.5 s
        profile = read_profile(profile_dir)
        connects = [(s.started, s.connected_at) for s in established if s.connected_at is not None]
        result["server_profile"] = _attribute(
            pool.receive_times, pool.latencies, connects, profile, publish_started, time.time()
        )
    pool.close()
    await asyncio.sleep(0.2)
    return Outcome(result, pool.latencies)
