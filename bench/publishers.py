"""Publishing at a steady rate: to our stream service's inject endpoint, or to nchan's publisher.

Both stamp ``sent_at`` just before the bytes leave, and register every
notification with the ``StreamPool`` so receivers can compute latency and the
accounting knows what each user should have received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.loadgen import StreamPool

_SEQ = itertools.count(1)


def notification(user: str, seq: int, now: float) -> dict[str, Any]:
    """A realistic notification (SPEC section 3) with a unique, time-ordered id."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": f"{int(now * 1_000_000):014x}{seq:010x}"[-24:],
        "event_type": "content_generation.progress",
        "user_id": user,
        "content_request_id": f"req_{seq}",
        "title": "Rendering your video",
        "message": "Your video is being rendered; this notification is part of a benchmark.",
        "progress_percentage": seq % 101,
        "metadata": {"bench": True},
        "timestamp": stamp,
        "created_at": stamp,
        "read": False,
    }


class Publisher:
    """Sends ``rate`` notifications per second, spread over the given users, in 10 ms ticks."""

    tick = 0.01

    def __init__(self, pool: StreamPool, users: Sequence[str], rate: float, seed: int = 7) -> None:
        self.pool = pool
        self.users = list(users)
        self.rate = rate
        self.random = random.Random(seed)
        self.per_user: dict[str, list[str]] = {}
        self.sent = 0
        self.errors = 0
        self.behind_max = 0  # most notifications a tick had to catch up on

    def _next(self, now: float) -> tuple[str, dict[str, Any]]:
        user = self.users[self.random.randrange(len(self.users))]
        body = notification(user, next(_SEQ), now)
        self.pool.sent_at[body["id"]] = now
        self.pool.user_of_key[body["id"]] = user
        self.per_user.setdefault(user, []).append(body["id"])
        return user, body

    async def run(self, duration: float) -> None:
        loop = asyncio.get_running_loop()
        await self.connect()
        start = loop.time()
        total = int(self.rate * duration)
        try:
            while self.sent < total:
                due = min(total, int((loop.time() - start) * self.rate) + 1)
                count = due - self.sent
                if count > 0:
                    self.behind_max = max(self.behind_max, count)
                    now = time.time()
                    batch = [self._next(now) for _ in range(count)]
                    self.sent += count
                    await self.send(batch, now)
                await asyncio.sleep(self.tick)
        finally:
            await self.close()

    async def connect(self) -> None:
        raise NotImplementedError

    async def send(self, batch: list[tuple[str, dict[str, Any]]], now: float) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


class InjectPublisher(Publisher):
    """POST /internal/bench/inject: one JSON array of channel messages per tick, one keep-alive connection."""

    def __init__(self, pool: StreamPool, users: Sequence[str], rate: float, host: str, port: int) -> None:
        super().__init__(pool, users, rate)
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: asyncio.Queue[int] = asyncio.Queue()
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self._reader_task = asyncio.ensure_future(self._responses())

    async def _responses(self) -> None:
        assert self.reader is not None
        while True:
            await self.pending.get()
            status = await _read_response(self.reader)
            if status >= 300:
                self.errors += 1
            self.pending.task_done()

    async def send(self, batch: list[tuple[str, dict[str, Any]]], now: float) -> None:
        assert self.writer is not None
        body = json.dumps(
            [{"user_id": u, "type": "notification", "data": n, "sent_at": now} for u, n in batch],
            separators=(",", ":"),
        ).encode()
        self.writer.write(
            f"POST /internal/bench/inject HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.pending.put_nowait(1)
        # Requests are pipelined; only stop when the server falls far behind.
        if self.pending.qsize() > 50:
            await self.pending.join()

    async def close(self) -> None:
        if self.writer is not None:
            try:
                await asyncio.wait_for(self.pending.join(), 30)
            except TimeoutError:
                self.errors += self.pending.qsize()
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


class NchanPublisher(Publisher):
    """POST /pub?id=<user> per notification, pipelined over a few keep-alive connections."""

    connections = 4

    def __init__(self, pool: StreamPool, users: Sequence[str], rate: float, host: str, port: int) -> None:
        super().__init__(pool, users, rate)
        self.host, self.port = host, port
        self.links: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Queue[int]]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.turn = 0

    async def connect(self) -> None:
        for _ in range(self.connections):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            queue: asyncio.Queue[int] = asyncio.Queue()
            self.links.append((reader, writer, queue))
            self.tasks.append(asyncio.ensure_future(self._responses(reader, queue)))

    async def _responses(self, reader: asyncio.StreamReader, queue: asyncio.Queue[int]) -> None:
        while True:
            await queue.get()
            status = await _read_response(reader)
            if status >= 300:
                self.errors += 1
            queue.task_done()

    async def send(self, batch: list[tuple[str, dict[str, Any]]], now: float) -> None:
        _, writer, queue = self.links[self.turn % len(self.links)]
        self.turn += 1
        parts = []
        for user, body in batch:
            data = json.dumps(body, separators=(",", ":")).encode()
            parts.append(
                f"POST /pub?id={user} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            queue.put_nowait(1)
        writer.write(b"".join(parts))
        if queue.qsize() > 500:
            await queue.join()

    async def close(self) -> None:
        for _, writer, queue in self.links:
            try:
                await asyncio.wait_for(queue.join(), 30)
            except TimeoutError:
                self.errors += queue.qsize()
            writer.close()
        for task in self.tasks:
            task.cancel()
