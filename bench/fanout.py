"""Tier 1/2: one fan-out load against one server, measured end to end."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.loadgen import LoopLag, StreamPool, own_cpu_seconds, summary_ms
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


async def _settle(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def run_load(
    kind: str,
    server: Server,
    load: Load,
    *,
    connect_rate: float,
    path_for: Callable[[str], str],
    drain_timeout: float = 15.0,
) -> Outcome:
    """``kind`` "inject" (our service or the stand-in) or "nchan" decides how messages are published."""
    pool = StreamPool("127.0.0.1", server.port)
    load_before = [round(x, 2) for x in os.getloadavg()]
    users = [f"bu{n:05d}" for n in range(load.users)]
    stream_users = [users[n % load.users] for n in range(load.streams)]
    await asyncio.sleep(0.5)
    rss_before = server.rss_bytes()

    await pool.open(stream_users, path_for, connect_rate)
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
    await publisher.run(load.duration)
    expected = pool.expected(publisher.per_user)
    await _settle(lambda: pool.delivered() >= expected, drain_timeout)
    wall = time.monotonic() - wall0
    server_cpu, client_cpu = server.cpu_seconds() - server_cpu0, own_cpu_seconds() - client_cpu0
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
        "publish_catch_up_max": publisher.behind_max,
        "measured_seconds": round(wall, 1),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    pool.close()
    await asyncio.sleep(0.2)
    return Outcome(result, pool.latencies)
