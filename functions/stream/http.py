"""HTTP helpers shared by the stream and the history API: errors, auth, bodies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions.stream.config import StreamSettings
from shared.errors import AuthError
from shared.tokens import Claims, verify_token

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_UNAVAILABLE = "5"


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def api_error_response(error: ApiError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, error.headers)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, {"Retry-After": RETRY_AFTER_UNAVAILABLE})


def misconfigured() -> ApiError:
    """A backend refused for a reason only the deployment can fix: a server error, not a 503 to wait out.

    The ERROR log line of ``shared.backends.google_errors`` names what is missing;
    the client is told no more than that the service is misconfigured.
    """
    return ApiError(500, "backend_misconfigured", "the service is misconfigured; its operators have been alerted")


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer`` or, for EventSource, of ``?token=``."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "unauthorized", "Authorization header must be 'Bearer <token>'")
        return value.strip()
    token = request.query_params.get("token")
    if not token:
        raise ApiError(401, "unauthorized", "missing token (Authorization: Bearer, ?ticket= or ?token=)")
    return token


def authenticate(request: Request, settings: StreamSettings) -> Claims:
    try:
        return verify_token(bearer_token(request), settings)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None


async def json_body(request: Request, timeout: float) -> dict[str, Any]:
    """The request's JSON object, read with a size limit and within ``timeout`` seconds.

    The time bound is the body's counterpart of the protocol's header timeout: a
    client sending one byte every few seconds must not hold a connection forever.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > MAX_BODY_BYTES:
                raise ApiError(413, "payload_too_large", f"body larger than {MAX_BODY_BYTES} bytes")
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length") from None
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > MAX_BODY_BYTES:
                    raise ApiError(413, "payload_too_large", f"body larger than {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body must arrive within {timeout:g} s", {"Connection": "close"}
        ) from None
    if not body:
        raise ApiError(400, "bad_request", "a JSON body is required")
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "body is not valid UTF-8 JSON") from None
    except RecursionError:
        # 64 KiB of "[" nests deeper than the decoder's recursion limit.
        raise ApiError(400, "bad_request", "body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return data
