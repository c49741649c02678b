"""Startup, liveness and readiness probes of the stream service: answered from memory, no backend call.

- ``GET /api/v1/notifications/live``: 200 while the service runs (draining included).
  The answer itself is the check: a wedged event loop does not answer within
  the probe's timeout. Nothing backend-related belongs here: a Firestore or
  Pub/Sub outage would then restart every instance and cut every stream, and
  a restart fixes neither.
- ``GET /api/v1/notifications/ready``: 200 once started and until it drains;
  503 ``{"status": "draining"}`` from SIGTERM on (the streams are being told
  to reconnect elsewhere), and before start-up or after stop. Cloud Run's
  startup probe uses it; the channel subscription's state is reported, not
  required, because an instance whose subscription is still being retried
  serves history and replays, and a Pub/Sub outage must not keep every new
  instance from starting.

The paths do not end in "z": Cloud Run reserves some such paths (/healthz).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from functions.stream.service import StreamService

LIVE_PATH = "live"
READY_PATH = "ready"
_NO_STORE = {"Cache-Control": "no-store"}


def probe_routes(prefix: str, service: Callable[[], StreamService | None]) -> list[BaseRoute]:
    """The probe routes under ``prefix``; ``service`` returns the running service (None before start)."""

    async def live(request: Request) -> Response:
        if service() is None:
            return JSONResponse({"status": "starting"}, status_code=503, headers=_NO_STORE)
        return JSONResponse({"status": "alive"}, headers=_NO_STORE)

    async def ready(request: Request) -> Response:
        svc = service()
        hub = svc.hub if svc is not None else None
        if svc is None or hub is None:
            return JSONResponse({"status": "starting"}, status_code=503, headers=_NO_STORE)
        if hub.shutting_down:
            return JSONResponse({"status": "draining", "streams": hub.count}, status_code=503, headers=_NO_STORE)
        subscription = svc.subscription
        body = {
            "status": "ready",
            "streams": hub.count,
            # In memory: the subscriber's own state, no call to Pub/Sub.
            "channel": "ok" if subscription is not None and subscription.healthy() else "pending",
        }
        return JSONResponse(body, headers=_NO_STORE)

    return [
        Route(f"{prefix}/{LIVE_PATH}", live, methods=["GET"]),
        Route(f"{prefix}/{READY_PATH}", ready, methods=["GET"]),
    ]
