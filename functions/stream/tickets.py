"""Stream tickets (SPEC section 4): a credential for one stream, short-lived and used once.

A browser cannot send headers with EventSource, so a stream's credential rides
in the URL, and Cloud Run's own request logs record full URLs, which this
service cannot redact. So the page never puts its JWT there: it asks
``POST /api/v1/notifications/stream-ticket`` (bearer token in the header) for a
ticket and opens the stream with ``?ticket=``. A ticket copied from a log is
worthless: it expires within ``STREAM_TICKET_TTL_SECONDS`` (at most 60) and
opens one stream only.

Format: ``st1.<payload>.<signature>``; the payload is base64url JSON
``{"sub", "exp", "tex", "jti"}`` (user, ticket expiry, expiry of the access
token it was issued for, random id); the signature is HMAC-SHA256 over
``st1.<payload>`` with STREAM_TICKET_SECRET, or by default with a key derived
from JWT_SECRET (a separate key, so a ticket is never a token and no token a
ticket). Any instance checks any instance's ticket without a lookup.

Single use, across instances: the first redemption records ``jti`` in
``RedeemedTickets`` (Firestore: one ``create()`` of ``stream_tickets/{jti}``,
refused atomically when it exists). Cost: one document write per stream opened
with a ticket, no read; the TTL policy deletes the documents after they expire.
Issuing costs no storage at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from functions.stream import metrics
from functions.stream.config import StreamSettings
from functions.stream.http import ApiError, authenticate, unavailable
from functions.stream.ratelimit import enforce
from shared.errors import BackendUnavailable, InvalidEventError
from shared.events import validate_user_id
from shared.redeemed_tickets import RedeemedTickets
from shared.tokens import Claims

if TYPE_CHECKING:
    from functions.stream.service import StreamService

logger = logging.getLogger(__name__)

PREFIX = "st1"
MAX_TICKET_LENGTH = 1024
_KEY_CONTEXT = b"notifications stream ticket v1"


@dataclass(frozen=True)
class Ticket:
    user_id: str
    expires_at: float
    token_expires_at: float  # the stream ends then, as it would with the token itself
    ticket_id: str


def ticket_key(settings: StreamSettings) -> bytes:
    if settings.stream_ticket_secret:
        return settings.stream_ticket_secret.encode()
    return hmac.new(settings.jwt_secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signing_input: str) -> str:
    return _b64(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def issue(claims: Claims, settings: StreamSettings, *, now: float | None = None) -> tuple[str, int]:
    """A ticket for the user of ``claims`` and its lifetime in whole seconds; never outlives the token."""
    now = time.time() if now is None else now
    expires_at = min(now + settings.stream_ticket_ttl_seconds, claims.expires_at)
    payload = {"sub": claims.user_id, "exp": expires_at, "tex": claims.expires_at, "jti": secrets.token_hex(16)}
    signing_input = f"{PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{signing_input}.{_sign(ticket_key(settings), signing_input)}", max(0, math.floor(expires_at - now))


def read(ticket: str, settings: StreamSettings, *, now: float | None = None) -> Ticket:
    """The ticket's content if its signature holds and it has not expired; ApiError 401 otherwise."""
    invalid = ApiError(401, "ticket_invalid", "invalid stream ticket")
    parts = ticket.split(".")
    if len(ticket) > MAX_TICKET_LENGTH or len(parts) != 3 or parts[0] != PREFIX:
        raise invalid
    expected = _sign(ticket_key(settings), f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(expected.encode(), parts[2].encode("ascii", "replace")):
        raise invalid
    try:
        payload: Any = json.loads(_unb64(parts[1]))
        result = Ticket(
            user_id=validate_user_id(payload["sub"], "sub"),
            expires_at=float(payload["exp"]),
            token_expires_at=float(payload["tex"]),
            ticket_id=str(payload["jti"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidEventError):
        raise invalid from None  # signed by us, so only a key shared with something else gets here
    if result.expires_at <= (time.time() if now is None else now):
        raise ApiError(401, "ticket_expired", "stream ticket expired; ask for a new one")
    return result


def issue_endpoint(
    settings: StreamSettings, service: Callable[[], StreamService]
) -> Callable[[Request], Awaitable[Response]]:
    """``POST /api/v1/notifications/stream-ticket``: bearer token in, ``{"ticket", "expires_in"}`` out."""

    async def endpoint(request: Request) -> Response:
        if request.headers.get("authorization") is None:
            # Taking ?token= here would put the JWT back into the URL that tickets keep it out of.
            raise ApiError(401, "unauthorized", "ask for a stream ticket with Authorization: Bearer <token>")
        claims = authenticate(request, settings)
        enforce(service(), "tickets", claims.user_id)
        ticket, expires_in = issue(claims, settings)
        metrics.STREAM_TICKETS.labels("issued").inc()
        return JSONResponse({"ticket": ticket, "expires_in": expires_in}, headers={"Cache-Control": "no-store"})

    return endpoint


async def authenticate_stream(request: Request, service: StreamService) -> Claims:
    """The claims a stream opens with: of its ``?ticket=`` (redeemed here, once), else of its token."""
    raw = request.query_params.get("ticket")
    if raw is None or request.headers.get("authorization") is not None:
        return authenticate(request, service.settings)
    ticket = read(raw, service.settings)
    await _redeem(service.backends.tickets, ticket, service.settings.backend_timeout_seconds)
    metrics.STREAM_TICKETS.labels("redeemed").inc()
    raw_claims = {"sub": ticket.user_id, "exp": ticket.token_expires_at}
    return Claims(user_id=ticket.user_id, expires_at=ticket.token_expires_at, raw=raw_claims)


async def _redeem(record: RedeemedTickets, ticket: Ticket, timeout: float) -> None:
    try:
        first = await asyncio.wait_for(asyncio.to_thread(record.redeem, ticket.ticket_id, ticket.expires_at), timeout)
    except (TimeoutError, BackendUnavailable) as exc:
        # A redemption that lands after this answer only burns the ticket; the client asks for another.
        logger.warning("stream ticket record unavailable", extra={"error": type(exc).__name__})
        raise unavailable("stream ticket record unavailable") from None
    if not first:
        raise ApiError(401, "ticket_used", "stream ticket already used; ask for a new one")
