"""An ended stream is freed by reference counting, not left in a reference cycle for the garbage collector.

Regression: the endpoint's disconnect watch was two closures that called each
other. The cycle kept every ended stream's session, request cycle, task and
connection alive until a collection; the warm-up connects of ``bench.routing``
(2,000 streams, closed) were collected in one pass of 130-470 ms in each
process, in the middle of the measured connects, as a disconnect storm would be
in production.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from functions.stream.app import create_app
from functions.stream.config import load_stream_settings
from shared.backends import memory_backends
from shared.tokens import load_token_settings, mint_token
from tests.support.protocol_server import serving

SECRET = "ended-streams-test-secret-" + "x" * 20
STREAMS = 20
# What outlives its stream in a cycle by design: asyncio's socket transport
# refers to itself through its read callback (CPython 3.11).
TRANSPORT_CYCLE = {"_SelectorSocketTransport", "TransportSocket", "socket", "method", "dict", "tuple"}


async def _cyclic_garbage_of_ended_streams() -> Counter[str]:
    env = {"NOTIFICATIONS_BACKEND": "memory", "JWT_SECRET": SECRET, "SSE_HEARTBEAT_INTERVAL": "30"}
    app = create_app(load_stream_settings(env), memory_backends())
    tokens = load_token_settings(env)
    async with app.router.lifespan_context(app), serving(HttpToolsProtocol, app) as (port, state):
        service = app.state.service

        async def opened(user: str) -> asyncio.StreamWriter:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            token = mint_token(user, tokens, ttl_seconds=600)
            writer.write(f"GET /api/v1/notifications/stream?token={token} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            await reader.readuntil(b"event: connection.established")
            return writer

        gc.collect()
        gc.disable()
        try:
            writers = [await opened(f"ended-{n}") for n in range(STREAMS)]
            assert service.hub.count == STREAMS
            for writer in writers:
                writer.close()
            del writers
            # Each stream's task returns once its receive() reports the disconnect.
            done, pending = await asyncio.wait(set(state.tasks), timeout=10)
            assert not pending, f"{len(pending)} streams still open after their clients went"
            del done, pending
            assert service.hub.count == 0
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            found = Counter(type(o).__qualname__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    return found


def test_an_ended_stream_leaves_nothing_of_its_own_in_a_reference_cycle() -> None:
    found = asyncio.run(_cyclic_garbage_of_ended_streams())
    ours = {name: count for name, count in found.items() if name not in TRANSPORT_CYCLE}
    assert "StreamSession" not in found, found
    assert "RequestResponseCycle" not in found, found
    assert "Task" not in found, found
    # Before the fix: about 49 objects per stream, 9 of them Tasks, sessions and request cycles.
    assert sum(ours.values()) < STREAMS, ours


def test_on_uvloop_as_the_service_runs_an_ended_stream_leaves_nothing_in_a_cycle() -> None:
    # functions/stream/serve.py runs uvicorn on uvloop, whose transports hold no cycle of their own.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        found = runner.run(_cyclic_garbage_of_ended_streams())
    assert sum(found.values()) == 0, found
