"""The stream service plus development-only routes, as ``make run`` and the browser tests serve it.

Never deployed: the production service (``functions/stream/main.py``) has none
of these routes. They are matched before the stream application sees a request:

- ``GET /demo/local`` tells the demo page it runs locally (so it shows the publish form);
- ``GET /demo/token?user=ID&ttl=SECONDS`` mints a development token (the page's ``getToken()``);
- ``POST /demo/publish`` (bearer token) publishes a content event for the token's user the way a
  worker would: to CONTENT_EVENTS_TOPIC on Pub/Sub, or, with the embedded in-memory backends, straight
  into ``functions.ingest.ingest.ingest`` in this process.

    python -m functions.stream.serve --app devtools.local_app:app --port 8080
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from functions.ingest.ingest import PubsubMessage, ingest
from functions.stream.config import StreamSettings, get_stream_settings
from shared.backends import get_backends
from shared.errors import AuthError, BackendUnavailable, InvalidEventError
from shared.events import EVENT_TYPES, validate_user_id
from shared.tokens import mint_token, verify_token

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_TTL_SECONDS = 86400
_EVENT_FIELDS = ("event_type", "title", "message", "content_request_id", "progress_percentage", "metadata")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class LocalRoutes:
    """The development routes; everything else goes to the wrapped stream application (lifespan included)."""

    def __init__(self, stream_app: ASGIApp, settings: StreamSettings) -> None:
        self.stream_app = stream_app
        self.settings = settings
        self._publisher: Any = None
        self.routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("GET", "/demo/local"): self.local,
            ("GET", "/demo/token"): self.token,
            ("POST", "/demo/publish"): self.publish,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.stream_app(scope, receive, send)

    async def local(self, request: Request) -> Response:
        ingest_path = "inline" if self.settings.backend == "memory" else "pubsub"
        return JSONResponse({"local": True, "backend": self.settings.backend, "ingest": ingest_path})

    async def token(self, request: Request) -> Response:
        try:
            user_id = validate_user_id(request.query_params.get("user", "demo-user"), "user")
        except InvalidEventError as exc:
            return _error(400, "invalid_request", str(exc))
        raw_ttl = request.query_params.get("ttl", "3600")
        if not raw_ttl.isdigit() or not 1 <= int(raw_ttl) <= MAX_TTL_SECONDS:
            return _error(400, "invalid_request", f"ttl must be 1-{MAX_TTL_SECONDS} seconds")
        token = mint_token(user_id, self.settings, ttl_seconds=int(raw_ttl))
        return JSONResponse({"token": token, "user_id": user_id, "expires_in": int(raw_ttl)})

    async def publish(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        try:
            claims = verify_token(header[7:] if header.lower().startswith("bearer ") else "", self.settings)
        except AuthError as exc:
            return _error(exc.status, exc.code, str(exc))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid_request", "body must be JSON")
        if not isinstance(body, dict) or body.get("event_type") not in EVENT_TYPES:
            return _error(400, "invalid_request", "body must be an object with a known event_type")
        event = {key: body[key] for key in _EVENT_FIELDS if body.get(key) is not None}
        event["user_id"] = claims.user_id
        event["timestamp"] = body.get("timestamp") or datetime.now(UTC).isoformat().replace("+00:00", "Z")
        data = json.dumps(event).encode("utf-8")
        try:
            if self.settings.backend == "memory":
                message = PubsubMessage(data, {}, f"local-{uuid.uuid4().hex}", datetime.now(UTC))
                outcome = await run_in_threadpool(ingest, message, get_backends(), self.settings)
                return JSONResponse({"via": "inline ingest", "outcome": outcome.value})
            message_id = await run_in_threadpool(self._publish, data)
        except BackendUnavailable as exc:
            return _error(503, "backend_unavailable", str(exc))
        return JSONResponse({"via": f"topic {self.settings.content_events_topic}", "message_id": message_id})

    def _publish(self, data: bytes) -> str:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        if self._publisher is None:
            self._publisher = pubsub_v1.PublisherClient()
        topic = f"projects/{self.settings.project_id}/topics/{self.settings.content_events_topic}"
        try:
            return str(self._publisher.publish(topic, data).result(timeout=self.settings.backend_timeout_seconds))
        except Exception as exc:  # any client failure is "Pub/Sub unavailable" to the form
            raise BackendUnavailable(f"publish to {topic} failed: {type(exc).__name__}") from exc


def create_app() -> ASGIApp:
    """The stream service's app with the development routes in front."""
    from functions.stream.main import app as stream_app

    return LocalRoutes(stream_app, get_stream_settings())


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access (by the server), not on import (by tests of LocalRoutes).
    if name == "app":
        return create_app()
    raise AttributeError(name)
