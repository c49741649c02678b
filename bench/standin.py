"""A trivial stand-in for the stream service, only to validate the bench harness.

Same surface as the real service's bench mode: ``GET /api/v1/notifications/stream?token=``
and ``POST /internal/bench/inject``. In-process fan-out, no replay, no limits:
figures measured against it say nothing about the real service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.config import get_settings
from shared.errors import AuthError
from shared.tokens import verify_token

_streams: dict[str, set[asyncio.Queue[bytes]]] = {}


async def stream(request: Request) -> Response:
    settings = get_settings()
    try:
        claims = verify_token(request.query_params.get("token", ""), settings)
    except AuthError as exc:
        return JSONResponse({"error": {"code": exc.code, "message": str(exc)}}, status_code=exc.status)
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=settings.sse_send_queue_size)
    _streams.setdefault(claims.user_id, set()).add(queue)

    async def events() -> AsyncIterator[bytes]:
        try:
            hello = {"user_id": claims.user_id, "heartbeat_interval": settings.sse_heartbeat_interval}
            yield f"retry: 3000\nevent: connection.established\ndata: {json.dumps(hello)}\n\n".encode()
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), settings.sse_heartbeat_interval)
                except TimeoutError:
                    yield f"event: heartbeat\ndata: {json.dumps({'timestamp': time.time()})}\n\n".encode()
        finally:
            _streams.get(claims.user_id, set()).discard(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def inject(request: Request) -> Response:
    messages = await request.json()
    for message in messages:
        data = message["data"]
        frame = f"id: {data['id']}\nevent: notification\ndata: {json.dumps(data)}\n\n".encode()
        for queue in _streams.get(message["user_id"], ()):
            if not queue.full():
                queue.put_nowait(frame)
    return JSONResponse({"dispatched": len(messages)})


app = Starlette(
    routes=[
        Route("/api/v1/notifications/stream", stream),
        Route("/internal/bench/inject", inject, methods=["POST"]),
    ]
)
