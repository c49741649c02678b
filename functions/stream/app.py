"""The ASGI application of the stream service (Starlette)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from functions.stream.config import StreamSettings, get_stream_settings
from functions.stream.endpoint import StreamEndpoint
from functions.stream.history import History
from functions.stream.http import ApiError, api_error_response, error_response
from functions.stream.probes import probe_routes
from functions.stream.service import StreamService
from functions.stream.tickets import issue_endpoint
from shared.backends import Backends, get_backends
from shared.logs import reset_trace, set_trace
from shared.registry import ConnectionRegistry

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
PREFIX = "/api/v1/notifications"
STREAM_PATH = f"{PREFIX}/stream"

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "too_many_requests",
    503: "unavailable",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error")


class TraceMiddleware:
    """Binds the request's X-Cloud-Trace-Context so its log lines group under the request."""

    def __init__(self, app: ASGIApp, project_id: str) -> None:
        self.app = app
        self.project_id = project_id

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function: without a trace header the app's own coroutine is
        # returned, so an open stream does not carry one more frame (memory).
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"x-cloud-trace-context":
                    return self._traced(value.decode("latin-1"), scope, receive, send)
        return self.app(scope, receive, send)

    async def _traced(self, header: str, scope: Scope, receive: Receive, send: Send) -> None:
        token = set_trace(header, self.project_id)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_trace(token)


def _middleware(settings: StreamSettings) -> list[Middleware]:
    middleware = [Middleware(TraceMiddleware, project_id=settings.project_id)]
    if not settings.cors_allowed_origins:
        return middleware
    return [
        *middleware,
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allowed_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Cache-Control"],
            max_age=600,
        ),
    ]


def create_app(
    settings: StreamSettings | None = None,
    backends: Backends | None = None,
    registry: ConnectionRegistry | None = None,
) -> Starlette:
    """The stream service; backends and settings default to the process's (built lazily at startup)."""
    settings = settings or get_stream_settings()
    # Both made per lifespan: an app object served twice (tests, a restarted
    # server) must not keep answering with the first lifespan's stopped service.
    services: list[StreamService] = []
    endpoints: list[StreamEndpoint] = []

    def service() -> StreamService:
        return services[0]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        chosen: Backends = backends if backends is not None else await asyncio.to_thread(get_backends)
        svc = StreamService(settings, chosen, registry)
        services[:] = [svc]
        endpoints[:] = [StreamEndpoint(svc)]
        app.state.service = svc
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    def history(name: str) -> Any:
        # Routes are built before the service exists (it needs the running loop).
        async def endpoint(request: Request) -> Response:
            response: Response = await getattr(History(service()), name)(request)
            return response

        return endpoint

    def stream_endpoint() -> StreamEndpoint:
        return endpoints[0]

    class Stream:
        """A raw ASGI endpoint (Starlette treats plain functions as request handlers)."""

        def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
            return stream_endpoint()(scope, receive, send)

    async def health(request: Request) -> Response:
        result = await service().health()
        body = {
            "status": result.status,
            "checks": result.checks,
            "instance_id": service().instance_id,
            "streams": service().hub.count if service().hub is not None else 0,  # type: ignore[union-attr]
        }
        return JSONResponse(body, status_code=503 if result.status == "unavailable" else 200)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def client_js(request: Request) -> Response:
        return FileResponse(WEB_DIR / "client.js", media_type="application/javascript")

    async def demo(request: Request) -> Response:
        return FileResponse(WEB_DIR / "demo.html", media_type="text/html")

    routes: list[BaseRoute] = [
        Route(f"{PREFIX}/stream", Stream(), methods=["GET"]),
        Route(f"{PREFIX}/stream-ticket", issue_endpoint(settings, service), methods=["POST"]),
        Route(f"{PREFIX}/health", health, methods=["GET"]),
        *probe_routes(PREFIX, lambda: services[0] if services else None),
        Route(f"{PREFIX}/client.js", client_js, methods=["GET"]),
        Route(f"{PREFIX}/mark-read", history("mark_read"), methods=["POST"]),
        Route(f"{PREFIX}/mark-unread", history("mark_unread"), methods=["POST"]),
        Route(f"{PREFIX}/preferences", history("get_preferences"), methods=["GET"]),
        Route(f"{PREFIX}/preferences", history("put_preferences"), methods=["PUT"]),
        Route(PREFIX, history("list"), methods=["GET"]),
        Route(PREFIX, history("delete_all"), methods=["DELETE"]),
        Route(f"{PREFIX}/{{notification_id}}", history("delete_one"), methods=["DELETE"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if settings.demo_page:
        routes += [
            Route("/demo", demo, methods=["GET"]),
            Mount("/demo/static", StaticFiles(directory=WEB_DIR, check_dir=False)),
        ]

    return StreamServiceApp(
        stream_endpoint,
        routes=routes,
        middleware=_middleware(settings),
        exception_handlers={HTTPException: _http_error, ApiError: _api_error, Exception: _internal_error},
        lifespan=lifespan,
    )


class StreamServiceApp(Starlette):
    """Starlette, except that opening a stream skips the middleware stack.

    Every middleware layer (errors, exceptions, trace, CORS, router, route)
    keeps a coroutine frame alive for as long as its request runs; for a stream
    that is the whole hour, times 10,000 streams. The stream endpoint does its
    own CORS, trace and error handling instead. Everything else (other paths,
    other methods on the stream path, lifespan) goes through Starlette.
    """

    def __init__(self, stream_endpoint: Callable[[], StreamEndpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream_endpoint = stream_endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function: servers (uvicorn) tell ASGI 3 from ASGI 2 by that.
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == STREAM_PATH:
            await self._stream_endpoint()(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
