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
delivered notification; RSS per stream; lost, duplicated, misrouted; connect
latency while the streams open. Before the passes, with nothing else open, the
connect latency at ``--connect-rate`` (``--connect-sample`` streams spread over
the processes, the Firestore emulator as registry) and of ``--same-user``
streams of one user opened at once; each phase waits until the registry is
empty again (every release done) before the next. ``--nchan`` adds
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.fanout import Load, run_load
from bench.loadgen import (
    LoopLag,
    StreamPool,
    drain,
    install_uvloop,
    own_cpu_seconds,
    raise_open_files_limit,
    summary_ms,
)
from bench.publishers import Publisher
from bench.servers import ROOT, Server, install_nchan, start_nchan, start_stream_service, stop_on_sigterm

logger = logging.getLogger("bench.routing")

JWT_SECRET = "bench-routing-secret-0123456789abcdefghij"  # noqa: S105 - a bench-only key
HEARTBEAT = 10
# Changes per batched write: at most two writes each (the change, its user's head), under Firestore's 500.
PERSIST_BATCH = 200
# Ticks being persisted and published at once.
IN_FLIGHT = 8
COMMIT_ATTEMPTS = 6
# How long the pass waits, after the first 30 s, for deliveries still missing.
LATE_WAIT = 90


class ChannelPublisher(Publisher):
    """Publishes each tick's notifications the way ingest does: persisted, then ``Channel.publish_many``, routed.

    Like ingest's, each message carries its change number in the user's feed
    (1, 2, ... per user: the streams start at the empty feed's head), so it is
    published without an ordering key and batches with other users' messages.
    Pub/Sub may then deliver two changes of one user out of order; a stream
    that sees a number skipped replays from the store. With ``persist`` the
    changes are written to the user's change log before they are published,
    as ingest does (one batched write per tick, not ingest's transaction per
    event). The writes are committed one tick after the other, so a change is
    never committed before the one it follows (ingest's transaction on the
    user's counter guarantees that), and the publishes then run concurrently
    (up to ``IN_FLIGHT`` at once), as ingest instances work side by side. Without it
    (the default: the Firestore emulator cannot take 1,000 change writes a
    second on this machine beside everything else) nothing is stored and the
    ticks are published one after the other (a tick that holds a user twice,
    in parts: ``_one_per_user``), so a user's changes leave in order; a
    stream that still saw one skipped would replay an empty log and lose it,
    which ``lost`` would show.
    ``numbered=False`` publishes them as the Redis-shaped ``publish_batch``
    does: no number, the user as ordering key, nothing stored.
    """

    def __init__(
        self,
        pool: StreamPool,
        users: Sequence[str],
        rate: float,
        channel: Any,
        numbered: bool,
        client: Any | None,
    ) -> None:
        super().__init__(pool, users, rate)
        self.channel = channel
        self.numbered = numbered
        self.client = client
        self.numbers: dict[str, int] = {}
        in_flight = IN_FLIGHT if client is not None else 1
        self._in_flight = asyncio.Semaphore(in_flight)
        self._threads = ThreadPoolExecutor(in_flight, thread_name_prefix="publish")
        # One thread, so ticks are committed in their order.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="persist")
        self._tasks: set[asyncio.Task[None]] = set()

    def _number(self, user: str) -> int | None:
        if not self.numbered:
            return None
        self.numbers[user] = self.numbers.get(user, 0) + 1
        return self.numbers[user]

    async def connect(self) -> None:
        return None

    def _persist(self, client: Any, messages: Sequence[Any]) -> None:
        from shared.backends.firestore_store import CHANGES, SEQ, change_id
        from shared.feed import Change

        numbered = [m for m in messages if m.seq is not None]
        for start in range(0, len(numbered), PERSIST_BATCH):
            batch = client.batch()
            heads: dict[str, int] = {}
            for message in numbered[start : start + PERSIST_BATCH]:
                user = client.collection("users").document(message.user_id)
                change = Change(message.seq, "notification", message.data, message.data["event_type"])
                batch.set(user.collection(CHANGES).document(change_id(message.seq)), change.to_dict())
                heads[message.user_id] = max(heads.get(message.user_id, 0), message.seq)
            for user_id, seq in heads.items():
                batch.set(client.collection("users").document(user_id), {SEQ: seq}, merge=[SEQ])
            self._commit(batch)

    @staticmethod
    def _commit(batch: Any) -> None:
        from google.api_core import exceptions as gexc

        for attempt in range(COMMIT_ATTEMPTS):
            try:
                batch.commit(timeout=30)
                return
            except gexc.Aborted:  # the emulator's lock timeout under load: ingest's transactions retry too
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)

    async def send(self, batch: list[tuple[str, dict[str, Any]]], now: float) -> None:
        from shared.channel import ChannelMessage

        messages = [
            ChannelMessage(user, "notification", body, sent_at=now, seq=self._number(user)) for user, body in batch
        ]
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] | None = None
        if self.client is not None:
            stored = loop.run_in_executor(self._writer, self._persist, self.client, messages)
        await self._in_flight.acquire()
        task = asyncio.ensure_future(self._send(messages, stored))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, messages: list[Any], stored: asyncio.Future[None] | None) -> None:
        try:
            if stored is not None:
                await stored
            for part in _one_per_user(messages) if stored is None else [messages]:
                await asyncio.get_running_loop().run_in_executor(self._threads, self.channel.publish_many, part)
        except Exception:  # a failed publish is counted, the run goes on
            logger.exception("publish failed")
            self.errors += len(messages)
        finally:
            self._in_flight.release()

    async def close(self) -> None:
        await asyncio.gather(*self._tasks)
        self._threads.shutdown()
        self._writer.shutdown()


def _one_per_user(messages: Sequence[Any]) -> list[list[Any]]:
    """The tick's messages in consecutive parts that hold at most one message of each user.

    Without the store, a user's changes must reach Pub/Sub in order: two of one
    tick can be split over two Publish requests in flight at once (the client's
    5 ms batches), and one that overtakes the other would make the stream
    replay an empty store and lose them. Publishing the parts one after the
    other keeps that order (about one tick in 200 has a user twice at 1,000/s).
    """
    parts: list[list[Any]] = []
    seen: list[set[str]] = []
    for message in messages:
        index = next((n for n, users in enumerate(seen) if message.user_id not in users), len(parts))
        if index == len(parts):
            parts.append([])
            seen.append(set())
        parts[index].append(message)
        seen[index].add(message.user_id)
    return parts


def _counter(server: Server, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _received(server: Server) -> float:
    return _counter(server, "sse_channel_messages_total")


def _skip_replays(servers: Sequence[Server]) -> int:
    return int(sum(_counter(s, "sse_skipped_change_replays_total") for s in servers))


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


def _lost_detail(pools: Sequence[StreamPool], per_user: dict[str, list[str]], most: int = 20) -> list[str]:
    """For the first lost deliveries: which of its user's changes (1, 2, ...) it was, and which arrived.

    A change lost while a later one of the same user arrived points at
    out-of-order delivery met by a store that does not hold the changes (see
    ``ChannelPublisher``); one lost with every later one lost too, elsewhere.
    """
    found = []
    for pool in pools:
        for stream in pool.established():
            keys = per_user.get(stream.user, [])
            missing = [n for n, key in enumerate(keys, 1) if key not in stream.seen]
            if missing:
                arrived = [n for n, key in enumerate(keys, 1) if key in stream.seen]
                found.append(f"{stream.user}: lost {missing} of {len(keys)}, arrived {arrived}")
            if len(found) >= most:
                return found
    return found


def _half(users: Sequence[str], half: int) -> Sequence[str]:
    middle = len(users) // 2
    return users[:middle] if half == 0 else users[middle:]


def _paths(users: Sequence[str]) -> dict[str, str]:
    from shared.tokens import load_token_settings, mint_token

    tokens = load_token_settings({"JWT_SECRET": JWT_SECRET})
    return {u: f"/api/v1/notifications/stream?token={mint_token(u, tokens, ttl_seconds=7200)}" for u in users}


def _connect_times(pools: Sequence[StreamPool]) -> list[float]:
    return [s.connected_at - s.started for p in pools for s in p.established() if s.connected_at is not None]


async def _connect_same_user(
    server: Server, paths: dict[str, str], users: Sequence[str], per_user: int, client: Any
) -> list[float]:
    """Seconds to the response head of ``per_user`` streams of each user opened at once."""
    pool = StreamPool("127.0.0.1", server.port)
    for user in users:
        await pool.open([user] * per_user, paths.__getitem__, rate=10_000)
    times = _connect_times([pool])
    pool.close()
    await _settled(client)
    return times


async def _connect_burst(
    servers: Sequence[Server], paths: dict[str, str], users: Sequence[str], rate: float, client: Any
) -> dict[str, Any]:
    """Connect latency at ``rate`` per second over the processes, with nothing else open or running."""
    pools = [StreamPool("127.0.0.1", s.port) for s in servers]
    shares = [users[index :: len(servers)] for index in range(len(servers))]
    lag = LoopLag()
    lag.start()
    cpu_before = sum(s.cpu_seconds() for s in servers)
    await asyncio.gather(
        *(p.open(share, paths.__getitem__, rate / len(servers)) for p, share in zip(pools, shares, strict=True))
    )
    cpu = sum(s.cpu_seconds() for s in servers) - cpu_before
    client_lag = await lag.stop()
    times = _connect_times(pools)
    for pool in pools:
        pool.close()
    released = await _settled(client)
    return {
        "rate_per_s": rate,
        **summary_ms(times),
        "failed": len(users) - len(times),
        "server_cpu_ms_per_connect": round(cpu * 1e3 / max(1, len(times)), 2),
        # How late the load generator's own loop woke a 10 ms timer meanwhile: its share of the times above.
        "client_loop_lag_ms": client_lag,
        # From closing every stream at once to an empty registry: a disconnect storm.
        "release_all_seconds": released,
    }


async def _settled(client: Any, timeout: float = 180.0) -> float:
    """Wait until the registry holds no stream (the releases of the closed streams are done); seconds waited."""
    from shared.backends.firestore_registry import CONNECTIONS

    query = client.collection(CONNECTIONS).limit(1).select([])
    start = time.monotonic()
    while any(True for _ in await asyncio.to_thread(lambda: list(query.stream()))):
        if time.monotonic() - start > timeout:
            logger.warning("registry entries still left after %.0f s", timeout)
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - start, 1)


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
    client: Any,
    persist: bool,
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
    skips_before = _skip_replays(servers)
    cpu_before = [s.cpu_seconds() for s in servers]
    client_cpu0 = own_cpu_seconds()
    persisting = client if persist and numbered else None
    publisher = ChannelPublisher(pools.pools[0], users, rate, channel, numbered, persisting)
    await publisher.run(duration)
    expected = sum(pool.expected(publisher.per_user) for pool in pools.pools)
    drained = await drain(
        lambda: pools.total("delivered"), expected, lambda: [s.cpu_seconds() for s in servers], timeout=30
    )
    cpu = [c - before for c, before in zip(drained.cpu, cpu_before, strict=True)]
    received = [_received(s) - r for s, r in zip(servers, received_before, strict=True)]
    on_time = drained.delivered
    # Stragglers (a redelivery after an ack deadline, say) are late, not lost; the CPU window is closed.
    deadline = time.monotonic() + LATE_WAIT
    while time.monotonic() < deadline and pools.total("delivered") < expected:
        await asyncio.sleep(0.5)
    delivered = pools.total("delivered")
    latencies = [x for pool in pools.pools for x in pool.latencies]
    result = {
        "pass": name,
        "messages": "numbered, as ingest publishes them" if numbered else "numberless, as publish_batch",
        "persisted": persisting is not None,
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
        "delivered_late": delivered - on_time,
        "lost": sum(pool.lost(publisher.per_user) for pool in pools.pools),
        "lost_detail": _lost_detail(pools.pools, publisher.per_user),
        # Streams that got a change before the one it follows: each replayed from the store.
        "skipped_change_replays": _skip_replays(servers) - skips_before,
        "duplicated": pools.total("duplicates"),
        "misrouted": sum(pool.misrouted for pool in pools.pools),
        "received_per_process": [int(r) for r in received],
        "received_over_published": [round(r / max(1, publisher.sent), 3) for r in received],
        "latency_ms": summary_ms(latencies),
        "server_cpu_s": [round(c, 2) for c in cpu],
        "server_cpu_us_per_delivery": round(sum(cpu) * 1e6 / max(1, on_time), 1),
        "server_cpu_us_per_received_message": round(sum(cpu) * 1e6 / max(1, sum(received)), 1),
        "rss_per_stream_kb": round((sum(rss_after) - sum(rss_before)) / max(1, len(established)) / 1024, 2),
        "rss_per_stream_kb_second_half": round(
            (sum(rss_after) - sum(rss_half)) / max(1, len(established) - half_open) / 1024, 2
        ),
        "publisher_cpu_s": round(own_cpu_seconds() - client_cpu0, 2),
    }
    for pool in pools.pools:
        pool.close()
    # From closing every stream at once to an empty registry: a disconnect storm.
    result["release_all_seconds"] = await _settled(client)
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
            "SSE_HEARTBEAT_INTERVAL": str(args.heartbeat),
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
        # Connects first, while nothing else is open: at the rate alone, then several of one user at once.
        # A first burst warms the emulator's JIT and the processes, as a service that has been running is.
        warm_users = [f"warm-{n:05d}" for n in range(args.connect_warmup)]
        warm = await _connect_burst(servers, _paths(warm_users), warm_users, args.connect_rate, store.client)
        burst_users = [f"burst-{n:05d}" for n in range(args.connect_sample)]
        burst = await _connect_burst(servers, _paths(burst_users), burst_users, args.connect_rate, store.client)
        same_user_users = [f"same-{n}" for n in range(args.same_user_rounds)]
        same_user = await _connect_same_user(
            servers[0], _paths(same_user_users), same_user_users, args.same_user, store.client
        )
        passes = []
        chosen = [(n, c) for n, c in (("routed", routed), ("broadcast", everywhere)) if n in args.passes]
        for name, channel in chosen:
            logger.warning("pass %s: %d streams on %d processes", name, args.streams, args.processes)
            passes.append(
                await _pass(
                    name,
                    servers,
                    channel,
                    users,
                    paths,
                    args.rate,
                    args.duration,
                    args.connect_rate,
                    args.numbered,
                    store.client,
                    args.persist,
                )
            )
        routed.close()
        everywhere.close()
        store.close()
        logged: Counter[str] = Counter()
        for server in servers:
            logged.update(server.log_messages())
        result: dict[str, Any] = {
            "connect_warmup_ms": warm,
            "connect_alone_ms": burst,
            "passes": passes,
            "server_warnings": dict(logged),
            "connect_same_user_ms": {"streams_per_user": args.same_user, **summary_ms(same_user)},
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "emulator_java_options": {kind: emulators.java_options(kind) for kind in ("pubsub", "firestore")},
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
            nchan = start_nchan(args.heartbeat)
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
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connect-rate", type=float, default=200.0)
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT, help="seconds between heartbeats, ours and nchan's")
    parser.add_argument(
        "--connect-sample", type=int, default=2000, help="streams opened at --connect-rate before the passes"
    )
    parser.add_argument(
        "--connect-warmup", type=int, default=2000, help="streams opened (and closed) before --connect-sample"
    )
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
    parser.add_argument(
        "--persist",
        action="store_true",
        help="write each change to the store before publishing it, as ingest does, ticks concurrently",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "routing.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    install_uvloop()
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
