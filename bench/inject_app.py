"""The stream service with the bench's injection route in front; never deployed.

    python -m functions.stream.serve --app bench.inject_app:app

``POST /internal/bench/inject`` takes a JSON array of channel messages
(``{user_id, type, data, sent_at}``) and hands them to the hub exactly as the
channel subscription's thread does, so the bench can load the fan-out without
Pub/Sub in the way. The production app (``functions.stream.main:app``) has no
such route; a test proves it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.channel import ChannelMessage

INJECT_PATH = "/internal/bench/inject"
MAX_INJECT_BYTES = 64 * 1024 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def decode_injected(body: bytes) -> list[ChannelMessage]:
    """The messages of one injection; ValueError naming what is wrong."""
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("body must be a JSON array of channel messages") from None
    if not isinstance(items, list):
        raise ValueError("body must be a JSON array of channel messages")
    messages = []
    for item in items:
        try:
            # Through the same decoding as a Pub/Sub message.
            messages.append(ChannelMessage.decode(json.dumps(item).encode()))
        except (ValueError, TypeError, RecursionError):
            raise ValueError("not a channel message: {user_id, type, data, sent_at}") from None
    return messages


class InjectRoute:
    def __init__(self, stream_app: Any) -> None:
        self.stream_app = stream_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == INJECT_PATH:
            response = await self._inject(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.stream_app(scope, receive, send)

    async def _inject(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_INJECT_BYTES:
            return _error(413, "payload_too_large", "injection batch too large")
        try:
            messages = decode_injected(body)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        hub = self.stream_app.state.service.hub

        # The subscription's pull thread calls hub.receive; so does this, from a worker thread.
        await asyncio.to_thread(hub.receive, messages)
        return JSONResponse({"accepted": len(messages)})


def __getattr__(name: str) -> ASGIApp:
    # ``app`` is built on first access (by the server), not on import.
    if name == "app":
        from functions.stream.main import app as stream_app

        return InjectRoute(stream_app)
    raise AttributeError(name)
