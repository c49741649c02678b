"""Channel routing on the real path: several stream processes, the Pub/Sub and Firestore emulators.

    .venv/bin/python -m bench.routing [--processes 4] [--streams 10000] [--rate 1000] [--duration 20]

What production does, end to end but for the ingest function's own work: each
notification is published through ``PubSubChannel`` routed by the Firestore
connection registry (one ``get_all`` per batch of ``publish_many``), to the
inbox topics of the stream processes that hold its user's stream; each process
pulls its own inbox with its lean streaming pull. Streams (one per user) are
spread round-robin over the processes, opened at ``--connect-rate`` per second.

Two passes in one run, side by side:

- ``routed``: the channel as built (SPEC section 1);
- ``broadcast``: the same notifications published to every instance (what the
  channel did before routing, and still does when the registry cannot be read).

For each pass and process: channel messages received (the process's own
``sse_channel_messages_total``) over notifications published; server CPU per
delivered notification; RSS per stream; lost, duplicated, misrouted. Then the
connect latency at ``--connect-rate`` with the Firestore emulator as registry,
and of ``--same-user`` streams of one user opened at once. ``--nchan`` adds
nginx+nchan (one worker) at the same stream count and rate for CPU and RSS.
Writes ``bench/routing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.fanout import Load, run_load
from bench.loadgen import StreamPool, own_cpu_seconds, raise_open_files_limit, summary_ms
from bench.publishers import Publisher
from bench.servers import ROOT, Server, install_nchan, start_nchan, start_stream_service

logger = logging.getLogger("bench.routing")

JWT_SECRET = "bench-routing-secret-0123456789abcdefghij"  # noqa: S105 - a bench-only key
HEARTBEAT = 10


class ChannelPublisher(Publisher):
    """Publishes each tick's notifications the way ingest does: ``Channel.publish_many``, routed.

    Like ingest's, each message carries its change number in the user's feed
    (1, 2, ... per user: the streams start at the empty feed's head), so it is
    published without an ordering key and batches with other users' messages.
    ``numbered=False`` publishes them as the Redis-shaped ``publish_batch`` does:
    no number, the user as ordering key.
    """

    def __init__(self, pool: StreamPool, users: Sequence[str], rate: float, channel: Any, numbered: bool) -> None:
        super().__init__(pool, users, rate)
        self.channel = channel
        self.numbered = numbered
        self.numbers: dict[str, int] = {}

    def _number(self, user: str) -> int | None:
        if not self.numbered:
            return None
        self.numbers[user] = self.numbers.get(user, 0) + 1
        return self.numbers[user]

    async def connect(self) -> None:
        return None

    async def send(self, batch: list[tuple[str, dict[str, Any]]], now: float) -> None:
        from shared.channel import ChannelMessage

        messages = [
            ChannelMessage(user, "notification", body, sent_at=now, seq=self._number(user)) for user, body in batch
        ]
        try:
            await asyncio.to_thread(self.channel.publish_many, messages)
        except Exception:  # a failed publish is counted, the run goes on
            logger.exception("publish failed")
            self.errors += len(batch)

    async def close(self) -> None:
        return None


def _received(server: Server) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    match = re.search(r"^sse_channel_messages_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


class _Pools:
    """One StreamPool per process, sharing the publisher's bookkeeping."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self.pools = [StreamPool("127.0.0.1", s.port) for s in servers]
        first = self.pools[0]
        for pool in self.pools[1:]:
            pool.sent_at = first.sent_at
            pool.user_of_key = first.user_of_key

    def total(self, name: str, *args: Any) -> int:
        return sum(int(getattr(pool, name)(*args)) for pool in self.pools)


def _half(users: Sequence[str], half: int) -> Sequence[str]:
    middle = len(users) // 2
    return users[:middle] if half == 0 else users[middle:]


def _paths(users: Sequence[str]) -> dict[str, str]:
    from shared.tokens import load_token_settings, mint_token

    tokens = load_token_settings({"JWT_SECRET": JWT_SECRET})
    return {u: f"/api/v1/notifications/stream?token={mint_token(u, tokens, ttl_seconds=7200)}" for u in users}


async def _connect_same_user(server: Server, paths: dict[str, str], users: Sequence[str], per_user: int) -> list[float]:
    """Seconds to the response head of ``per_user`` streams of each user opened at once."""
    pool = StreamPool("127.0.0.1", server.port)
    times: list[float] = []
    for user in users:
        await pool.open([user] * per_user, paths.__getitem__, rate=10_000)
    for stream in pool.established():
        if stream.connected_at is not None:
            times.append(stream.connected_at - stream.started)
    pool.close()
    return times


async def _pass(
    name: str,
    servers: Sequence[Server],
    channel: Any,
    users: Sequence[str],
    paths: dict[str, str],
    rate: float,
    duration: float,
    connect_rate: float,
    numbered: bool,
) -> dict[str, Any]:
    pools = _Pools(servers)
    rss_before = [s.rss_bytes() for s in servers]
    connect_cpu_before = [s.cpu_seconds() for s in servers]
    # Round-robin: stream n on process n % N, the way a load balancer spreads users.
    assigned = [[u for n, u in enumerate(users) if n % len(servers) == index] for index in range(len(servers))]
    rss_half: list[int] = []
    half_open = 0
    opened = time.monotonic()
    for half in (0, 1):
        await asyncio.gather(
            *(
                pool.open(_half(assigned[index], half), paths.__getitem__, connect_rate / len(servers))
                for index, pool in enumerate(pools.pools)
            )
        )
        if half == 0:
            # What the second half adds is what a stream costs, without the process's first growth.
            rss_half = [s.rss_bytes() for s in servers]
            half_open = sum(len(pool.established()) for pool in pools.pools)
    connect_seconds = time.monotonic() - opened
    established = [s for pool in pools.pools for s in pool.established()]
    connects = [s.connected_at - s.started for s in established if s.connected_at is not None]
    connect_cpu = sum(s.cpu_seconds() for s in servers) - sum(connect_cpu_before)
    await asyncio.sleep(1.0)
    rss_after = [s.rss_bytes() for s in servers]
    received_before = [_received(s) for s in servers]
    cpu_before = [s.cpu_seconds() for s in servers]
    client_cpu0 = own_cpu_seconds()
    publisher = ChannelPublisher(pools.pools[0], users, rate, channel, numbered)
    await publisher.run(duration)
    expected = sum(pool.expected(publisher.per_user) for pool in pools.pools)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pools.total("delivered") < expected:
        await asyncio.sleep(0.1)
    cpu = [s.cpu_seconds() - c for s, c in zip(servers, cpu_before, strict=True)]
    received = [_received(s) - r for s, r in zip(servers, received_before, strict=True)]
    delivered = pools.total("delivered")
    latencies = [x for pool in pools.pools for x in pool.latencies]
    result = {
        "pass": name,
        "messages": "numbered, as ingest publishes them" if numbered else "numberless, as publish_batch",
        "processes": len(servers),
        "streams": len(established),
        "connect_seconds": round(connect_seconds, 1),
        "connect_ms": summary_ms(connects),
        # Everything the processes did while the streams opened (heartbeats of the open ones included).
        "server_cpu_ms_per_connect": round(connect_cpu * 1e3 / max(1, len(established)), 2),
        "published": publisher.sent,
        "publish_errors": publisher.errors,
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": sum(pool.lost(publisher.per_user) for pool in pools.pools),
        "duplicated": pools.total("duplicates"),
        "misrouted": sum(pool.misrouted for pool in pools.pools),
        "received_per_process": [int(r) for r in received],
        "received_over_published": [round(r / max(1, publisher.sent), 3) for r in received],
        "latency_ms": summary_ms(latencies),
        "server_cpu_s": [round(c, 2) for c in cpu],
        "server_cpu_us_per_delivery": round(sum(cpu) * 1e6 / max(1, delivered), 1),
        "server_cpu_us_per_received_message": round(sum(cpu) * 1e6 / max(1, sum(received)), 1),
        "rss_per_stream_kb": round((sum(rss_after) - sum(rss_before)) / max(1, len(established)) / 1024, 2),
        "rss_per_stream_kb_second_half": round(
            (sum(rss_after) - sum(rss_half)) / max(1, len(established) - half_open) / 1024, 2
        ),
        "publisher_cpu_s": round(own_cpu_seconds() - client_cpu0, 2),
    }
    for pool in pools.pools:
        pool.close()
    await asyncio.sleep(2.0)  # the processes release the streams' registry entries
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools import emulators
    from shared.backends.firestore_registry import FirestoreDirectory
    from shared.backends.firestore_store import FirestoreStore
    from shared.backends.pubsub_channel import PubSubChannel, ensure_topics

    raise_open_files_limit()
    project = f"bench-routing-{uuid.uuid4().hex[:6]}"
    started = [emulators.start("pubsub", project), emulators.start("firestore", project)]
    servers: list[Server] = []
    try:
        env = {"GOOGLE_CLOUD_PROJECT": project, **started[0].env(), **started[1].env()}
        os.environ.update(env)
        ensure_topics(project, ["user-notifications", "content-generation-events-dead-letter"])
        stream_env = {
            **env,
            "JWT_SECRET": JWT_SECRET,
            "SSE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
            "SSE_MAX_CONNECTIONS_PER_USER": str(max(3, args.same_user)),
            "LOG_LEVEL": "WARNING",
            "DEMO_PAGE": "off",
        }
        servers = [start_stream_service(stream_env) for _ in range(args.processes)]
        for server in servers:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                health = httpx.get(f"http://127.0.0.1:{server.port}/api/v1/notifications/health", timeout=10)
                if health.json().get("checks", {}).get("subscription") == "ok":
                    break
                await asyncio.sleep(0.2)
        users = [f"ru{n:05d}" for n in range(args.streams)]
        paths = _paths(users)
        store = FirestoreStore(project, timeout=10)
        routed = PubSubChannel(
            project, "user-notifications", timeout=10, router=FirestoreDirectory(store.client).instances_of
        )
        everywhere = PubSubChannel(project, "user-notifications", timeout=10)
        passes = []
        chosen = [(n, c) for n, c in (("routed", routed), ("broadcast", everywhere)) if n in args.passes]
        for name, channel in chosen:
            logger.warning("pass %s: %d streams on %d processes", name, args.streams, args.processes)
            passes.append(
                await _pass(
                    name, servers, channel, users, paths, args.rate, args.duration, args.connect_rate, args.numbered
                )
            )
        same_user_users = [f"same-{n}" for n in range(args.same_user_rounds)]
        same_paths = _paths(same_user_users)
        same_user = await _connect_same_user(servers[0], same_paths, same_user_users, args.same_user)
        routed.close()
        everywhere.close()
        store.close()
        logged: Counter[str] = Counter()
        for server in servers:
            logged.update(server.log_messages())
        result: dict[str, Any] = {
            "passes": passes,
            "server_warnings": dict(logged),
            "connect_same_user_ms": {"streams_per_user": args.same_user, **summary_ms(same_user)},
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for server in servers:
            server.stop()
        for emulator in reversed(started):
            emulator.stop()
    if args.nchan:
        why_not = install_nchan()
        if why_not:
            result["nchan"] = {"skipped": why_not}
        else:
            nchan = start_nchan(HEARTBEAT)
            try:
                load = Load("routing", args.streams, args.streams, args.rate, args.duration)
                outcome = await run_load(
                    "nchan", nchan, load, connect_rate=args.connect_rate, path_for=lambda u: f"/sub?id={u}"
                )
                result["nchan"] = outcome.result
            finally:
                nchan.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connect-rate", type=float, default=200.0)
    parser.add_argument("--same-user", type=int, default=3)
    parser.add_argument("--same-user-rounds", type=int, default=30)
    parser.add_argument("--nchan", action="store_true", help="also measure nginx+nchan at the same load")
    parser.add_argument(
        "--passes",
        type=lambda text: text.split(","),
        default=["routed", "broadcast"],
        help="comma-separated, of routed,broadcast (broadcast publishes every message to every process)",
    )
    parser.add_argument(
        "--numberless",
        dest="numbered",
        action="store_false",
        help="publish as publish_batch does (no change numbers, the user as ordering key), not as ingest does",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "routing.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
