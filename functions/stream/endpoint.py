"""``GET /api/v1/notifications/stream``: one user's live stream (SPEC section 4).

A raw ASGI handler rather than a StreamingResponse: it batches every queued
event into one write, watches the client's disconnect with a single pending
``receive``, and can give up on a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from functions.stream import metrics, sse
from functions.stream.http import (
    ApiError,
    api_error_response,
    error_response,
    misconfigured,
    unavailable,
)
from functions.stream.hub import HEAD
from functions.stream.protocol import direct_writer
from functions.stream.ratelimit import enforce
from functions.stream.session import StreamSession
from functions.stream.switch import refuse_if_switched_off
from functions.stream.tickets import authenticate_stream
from shared import ids
from shared.errors import BackendMisconfigured, BackendUnavailable
from shared.logs import reset_trace, set_trace

if TYPE_CHECKING:
    from functions.stream.service import StreamService

logger = logging.getLogger(__name__)

# How long a client cut off as too slow gets to read its stream.closing before
# the connection is dropped without it.
SLOW_CONSUMER_GRACE_SECONDS = 5.0

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _baseline_id() -> str:
    """The cursor of a stream opened without Last-Event-ID: every change committed from about now on.

    ``HEAD`` is resolved to the feed's head by the first replay, which runs
    after the stream is registered (in the registry, then in the hub). A change
    committed before that read is in the history the client loaded (or after
    its ``stream_cursor``, which it sends as Last-Event-ID). A change committed
    after it was committed after the registration, and its publisher reads the
    registry after committing, so it routes the change here. No clock is involved.
    """
    return HEAD


def _valid_cursor(value: str) -> bool:
    # A notification id is what clients from before change numbers send: accepted,
    # and answered with replay.truncated (they reload the history).
    return ids.parse_cursor(value) is not None or ids.is_valid_id(value)


class _DisconnectWatch:
    """One pending ``receive()`` per stream: it completes when the client goes, and closes the session.

    An object rather than two closures that call each other: those formed a
    reference cycle that kept every ended stream's connection, session and task
    alive until a garbage collection, and a disconnect storm left thousands of
    them for one long pause of every stream on the instance.
    """

    __slots__ = ("_pending", "_receive", "_session")

    def __init__(self, receive: Receive, session: StreamSession) -> None:
        self._receive = receive
        self._session = session
        self._pending: asyncio.Future[Message] | None = None

    def start(self) -> None:
        self._pending = asyncio.ensure_future(self._receive())
        self._pending.add_done_callback(self._on_message)

    def stop(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()

    def _on_message(self, future: asyncio.Future[Message]) -> None:
        if future.cancelled() or future is not self._pending:
            return
        if future.exception() is not None or future.result().get("type") == "http.disconnect":
            self._pending = None
            self._session.close(None)
        else:
            self.start()  # more request body (ignored): keep watching


class StreamEndpoint:
    def __init__(self, service: StreamService) -> None:
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app sends GET requests of this path here directly, past Starlette's
        # middleware (each layer would keep a frame alive for the whole stream),
        # so CORS, the trace id and the 500 answer are done here.
        request = Request(scope, receive)
        headers = self._cors_headers(request)
        trace = set_trace(request.headers.get("x-cloud-trace-context"), self._service.settings.project_id)
        try:
            if scope.get("method") != "GET":
                # Starlette adds HEAD to GET routes; a HEAD must not hold a stream open.
                raise ApiError(405, "method_not_allowed", "the stream is GET only", {"Allow": "GET"})
            session, deadline, reason = await self._open(request)
        except ApiError as error:
            metrics.CONNECTS_REJECTED.labels(error.code).inc()
            error.headers.update(dict(headers))
            await api_error_response(error)(scope, receive, send)
            return
        except Exception:
            logger.exception("stream failed to open")
            await error_response(500, "internal", "internal error", dict(headers))(scope, receive, send)
            return
        finally:
            reset_trace(trace)
        del request
        try:
            await self._serve(session, deadline, reason, receive, send, headers)
        finally:
            await self._service.forget(session)

    def _cors_headers(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if origin is None or origin not in self._service.settings.cors_allowed_origins:
            return []
        return [("access-control-allow-origin", origin), ("vary", "Origin")]

    async def _open(self, request: Request) -> tuple[StreamSession, float, str]:
        service = self._service
        settings = service.settings
        claims = await authenticate_stream(request, service)
        enforce(service, "connects", claims.user_id)
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is None:
            last_event_id = request.query_params.get("last_event_id")
        if last_event_id is not None:
            if not _valid_cursor(last_event_id):
                raise ApiError(400, "bad_request", "Last-Event-ID must be a cursor sent by this stream")
        hub = service.hub
        if hub is None or hub.shutting_down:
            raise unavailable("the service is shutting down")
        await refuse_if_switched_off(service.backends.killswitch)
        now = time.time()
        if claims.expires_at <= now:
            raise ApiError(401, "token_expired", "token expired")
        connection_id = uuid.uuid4().hex
        accepted = await self._acquire(claims.user_id, connection_id)
        if not accepted:
            raise ApiError(
                429,
                "too_many_connections",
                f"at most {settings.sse_max_connections_per_user} live streams per user",
                {"Retry-After": str(max(1, int(settings.sse_heartbeat_interval * 2)))},
            )
        session = StreamSession(
            claims.user_id, connection_id, settings.sse_send_queue_size, last_event_id or _baseline_id()
        )
        session.push(
            sse.established(connection_id, claims.user_id, settings.sse_heartbeat_interval, settings.sse_retry_ms),
            force=True,
        )
        # Registered (in the registry, then in the hub) before the store is read, so
        # a change committed from now on is routed here; live messages wait while
        # the replay runs. The replay also places a stream without Last-Event-ID
        # at the feed's head.
        session.replaying = True
        hub.add(session)
        try:
            await self._unless_stopping(hub.replay(session, session.baseline_id, announce_truncation=True))
        except BackendMisconfigured:
            await service.forget(session)
            raise misconfigured() from None
        except BackendUnavailable as exc:
            await service.forget(session)
            logger.warning("replay failed: store unavailable", extra={"error": str(exc)})
            raise unavailable("notification store unavailable") from None
        except BaseException:
            await service.forget(session)
            raise
        if claims.expires_at < now + settings.sse_max_stream_seconds:
            return session, claims.expires_at, "token_expired"
        return session, now + settings.sse_max_stream_seconds, "max_duration"

    async def _unless_stopping(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; BackendUnavailable as soon as the instance stops (a store that hangs must not hold it)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._service.stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not task.done():
            task.cancel()
            raise BackendUnavailable("the service is shutting down")
        task.result()

    async def _acquire(self, user_id: str, connection_id: str) -> bool:
        """Record the connection, or 503 within BACKEND_TIMEOUT_SECONDS.

        The Firestore client retries a transaction's begin/commit for up to a
        minute while the backend is down; the client gets its 503 sooner, and a
        record that lands after the answer is released again.
        """
        registry = self._service.registry
        abandoned = threading.Event()
        deadline = asyncio.get_running_loop().time() + self._service.settings.backend_timeout_seconds

        async def run() -> bool:
            # One connect per user at a time on this instance: the user's record
            # is one document, and concurrent transactions on it only contend.
            async with self._service.user_lock(user_id):
                if abandoned.is_set():
                    return False
                return await asyncio.to_thread(registry.acquire, user_id, connection_id, abandoned)

        attempt = asyncio.ensure_future(run())
        stopping = asyncio.ensure_future(self._service.stopping.wait())
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            # A connect still waiting for the registry when the instance stops gets
            # its 503 at once instead of holding the shutdown up.
            await asyncio.wait({attempt, stopping}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                raise TimeoutError
            return attempt.result()
        except TimeoutError:
            abandoned.set()
            logger.warning("connection registry timed out" if not stopping.done() else "connect abandoned at shutdown")

            def release_late(done: asyncio.Future[bool]) -> None:
                if not done.cancelled() and done.exception() is None and done.result():
                    late = asyncio.get_running_loop().run_in_executor(None, registry.release, user_id, connection_id)
                    late.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieve, never raise

            attempt.add_done_callback(release_late)
        except BackendMisconfigured:
            raise misconfigured() from None
        except BackendUnavailable as exc:
            logger.warning("connection registry unavailable", extra={"error": str(exc)})
        finally:
            stopping.cancel()
        raise unavailable("connection registry unavailable")

    async def _serve(
        self,
        session: StreamSession,
        deadline: float,
        reason: str,
        receive: Receive,
        send: Send,
        extra_headers: list[tuple[str, str]],
    ) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        timer = loop.call_later(max(0.0, deadline - time.time()), session.close, reason)
        abort_timer: list[asyncio.TimerHandle] = []

        def abort() -> None:
            if task is not None:
                abort_timer.append(loop.call_later(SLOW_CONSUMER_GRACE_SECONDS, task.cancel))

        session.set_abort(abort)

        watch = _DisconnectWatch(receive, session)
        # Consume the (empty) request body first; the server may deliver it in several messages.
        message = await receive()
        while message.get("type") == "http.request" and message.get("more_body"):
            message = await receive()
        if message.get("type") == "http.disconnect":
            session.close(None)
        else:
            watch.start()
        try:
            headers = STREAM_HEADERS + [(k.encode(), v.encode("latin-1")) for k, v in extra_headers]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            session.write_now = direct_writer(send)
            while not session.done:
                await session.wait()
                chunk = session.take()
                if chunk:
                    session.sending = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    session.sending = False
            # stream.closing is out; the registry slot is freed before the response
            # ends (when a browser reconnects), so a reconnect never meets its own old entry.
            await self._service.forget(session)
            await send({"type": "http.response.body", "body": session.take(), "more_body": False})
        except asyncio.CancelledError:
            # A slow consumer that did not read its stream.closing in time, or
            # the server stopping: returning without completing makes the server
            # close the connection. Neither is an error worth a stack trace.
            if not session.slow and not self._service.stopping.is_set():
                raise
            logger.info("dropped a stream that stopped reading", extra={"connection_id": session.connection_id})
        finally:
            session.write_now = None
            timer.cancel()
            for handle in abort_timer:
                handle.cancel()
            watch.stop()
            metrics.STREAMS_CLOSED.labels(session.closed_reason or "error").inc()
