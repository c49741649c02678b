"""The history API (SPEC section 5): list, mark read/unread, delete, preferences.

Every call is scoped to the user of the token: the store is only ever asked
for that user's documents, so no request can reach another user's data. Each
change is published on the user's channel so all of that user's streams (every
tab, every instance) update.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from functions.stream.http import ApiError, authenticate, json_body, misconfigured, unavailable
from functions.stream.ratelimit import enforce
from shared.errors import BackendMisconfigured, BackendUnavailable
from shared.events import EVENT_TYPES
from shared.feed import Change, FeedHead, change_message
from shared.ids import format_cursor, is_valid_id
from shared.store import MAX_PAGE

if TYPE_CHECKING:
    from functions.stream.service import StreamService

logger = logging.getLogger(__name__)

def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a whole number from 1 to 100") from None
    if not 1 <= value <= MAX_PAGE:
        raise ApiError(400, "bad_request", "limit must be a whole number from 1 to 100")
    return value


def _flag(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered in {"true", "1"}:
        return True
    if lowered in {"false", "0"}:
        return False
    raise ApiError(400, "bad_request", f"{name} must be true or false")


def _ids(body: dict[str, Any], *, allow_all: bool, max_ids: int) -> list[str] | None:
    """The ids a mark call names, or None for ``{"all": true}``."""
    unknown = set(body) - {"notification_ids", "all"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "all" in body:
        if not allow_all or body["all"] is not True or "notification_ids" in body:
            raise ApiError(400, "bad_request", 'use either {"notification_ids": [...]} or {"all": true}')
        return None
    ids = body.get("notification_ids")
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "bad_request", "notification_ids must be a non-empty array of ids")
    if len(ids) > max_ids:
        # Each id is a document read: the bound keeps one call's cost small (the rate limit, the number of calls).
        raise ApiError(400, "bad_request", f"at most {max_ids} notification_ids per call")
    if not all(isinstance(i, str) and is_valid_id(i) for i in ids):
        raise ApiError(400, "bad_request", "every notification id must be 24 lowercase hex digits")
    return list(dict.fromkeys(ids))


def _muted(body: dict[str, Any]) -> frozenset[str]:
    unknown = set(body) - {"muted_event_types"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    types = body.get("muted_event_types")
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ApiError(400, "bad_request", "muted_event_types must be an array of event types")
    wrong = sorted(set(types) - EVENT_TYPES)
    if wrong:
        raise ApiError(400, "bad_request", f"unknown event type(s): {', '.join(wrong)[:200]}")
    return frozenset(types)


class History:
    def __init__(self, service: StreamService) -> None:
        self._service = service

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except BackendMisconfigured:
            raise misconfigured() from None
        except BackendUnavailable as exc:
            logger.warning("store unavailable", extra={"error": str(exc)})
            raise unavailable("notification store unavailable") from None

    async def _announce(self, user_id: str, changes: list[Change]) -> None:
        if not changes:
            return
        messages = [change_message(user_id, change) for change in changes]
        try:
            await asyncio.to_thread(self._service.backends.channel.publish_many, messages)
        except Exception as exc:  # noqa: BLE001 - whatever the channel raised, the change is stored
            # The change is logged: a stream that receives any later change replays
            # this one first, and a reconnect replays it; the caller gets its answer.
            logger.warning("could not announce a change on the channel", extra={"error": repr(exc)[:500]})

    async def list(self, request: Request) -> Response:
        claims = authenticate(request, self._service.settings)
        enforce(self._service, "history", claims.user_id)
        params = request.query_params
        limit = _limit(params.get("limit"))
        cursor = params.get("cursor") or None
        if cursor is not None and not is_valid_id(cursor):
            raise ApiError(400, "bad_request", "cursor must be a next_cursor returned by this API")
        unread_only = _flag(params.get("unread_only"), "unread_only")
        store = self._service.backends.store
        # The head is read before the page: every change after it is replayed to
        # a stream opened with it, every change up to it is in the page.
        head: FeedHead = await self._call(store.head, claims.user_id)
        # One snapshot: a page and a count read apart can disagree about a notification committed between them.
        page, unread = await self._call(store.page_and_unread_count, claims.user_id, limit, cursor, unread_only)
        return JSONResponse(
            {
                "notifications": [n.to_dict() for n in page.notifications],
                "unread_count": unread,
                "next_cursor": page.next_cursor,
                "stream_cursor": format_cursor(head.user_seq, head.broadcast_seq),
            }
        )

    async def _mark(self, request: Request, read: bool) -> Response:
        settings = self._service.settings
        claims = authenticate(request, settings)
        enforce(self._service, "changes", claims.user_id)
        body = await json_body(request, settings.http_body_timeout_seconds)
        ids = _ids(body, allow_all=True, max_ids=settings.history_max_ids_per_request)
        changes: list[Change] = await self._call(self._service.backends.store.set_read, claims.user_id, ids, read)
        await self._announce(claims.user_id, changes)
        return JSONResponse({"updated": sum(len(c.data["ids"]) for c in changes)})

    async def mark_read(self, request: Request) -> Response:
        return await self._mark(request, True)

    async def mark_unread(self, request: Request) -> Response:
        return await self._mark(request, False)

    async def delete_one(self, request: Request) -> Response:
        claims = authenticate(request, self._service.settings)
        enforce(self._service, "changes", claims.user_id)
        notification_id = str(request.path_params["notification_id"])
        if not is_valid_id(notification_id):
            raise ApiError(400, "bad_request", "notification id must be 24 lowercase hex digits")
        change = await self._call(self._service.backends.store.delete, claims.user_id, notification_id)
        if change is None:
            raise ApiError(404, "not_found", "no such notification")
        await self._announce(claims.user_id, [change])
        return Response(status_code=204)

    async def delete_all(self, request: Request) -> Response:
        claims = authenticate(request, self._service.settings)
        enforce(self._service, "changes", claims.user_id)
        deleted, change = await self._call(self._service.backends.store.delete_all, claims.user_id)
        await self._announce(claims.user_id, [change] if change is not None else [])
        return JSONResponse({"deleted": deleted})

    async def get_preferences(self, request: Request) -> Response:
        claims = authenticate(request, self._service.settings)
        muted: frozenset[str] = await self._call(self._service.backends.store.muted, claims.user_id)
        return JSONResponse({"muted_event_types": sorted(muted)})

    async def put_preferences(self, request: Request) -> Response:
        settings = self._service.settings
        claims = authenticate(request, settings)
        enforce(self._service, "changes", claims.user_id)
        muted = _muted(await json_body(request, settings.http_body_timeout_seconds))
        saved: frozenset[str] = await self._call(self._service.backends.store.set_muted, claims.user_id, muted)
        return JSONResponse({"muted_event_types": sorted(saved)})
