"""A scripted stand-in for the stream service, to drive client.js into cases the real one rarely produces.

Each stream connection takes the next plan from a queue: a list of SSE frames to
send (``Pause`` waits, ``Hang`` holds the response open until the client goes,
the end of the list ends the response), or an HTTP status (or a ``Refuse``,
with its error code and headers) to answer with. Stream tickets are handed out
for any token (``refuse_tickets`` refuses the next few) and name the token they
were asked with. Every connection attempt is recorded with its query, headers,
token and time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from devtools.emulators import free_port
from tests.support import ROOT
from tests.support.waiting import port_open, wait_for

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<script type="module">
import { NotificationClient, backoffDelay, tokenExpiry } from "/api/v1/notifications/client.js";
window.backoffDelay = backoffDelay;
window.tokenExpiry = tokenExpiry;
window.log = { states: [], tokenCalls: 0, truncated: [], live: [] };
window.startClient = (tokens, options = {}) => {
  const client = new NotificationClient({
    getToken: async () => tokens[Math.min(window.log.tokenCalls++, tokens.length - 1)],
    onStateChange: (state) => window.log.states.push(state),
    onTruncated: (info) => window.log.truncated.push(info),
    onNotification: (n) => window.log.live.push(n.id),
    ...options,
  });
  window.client = client;
  client.start();
};
window.ready = true;
</script></body></html>"""


@dataclass
class Pause:
    seconds: float


@dataclass
class Hang:
    pass


# What a plan holds: SSE text to send, a pause, or a hang until the client goes away.
Step = str | Pause | Hang


@dataclass
class Refuse:
    status: int
    code: str = "x"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Attempt:
    query: dict[str, str]
    headers: dict[str, str]
    at: float
    token: str | None  # the token of its ticket, or of ?token=


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def established(heartbeat_interval: float = 30, retry_ms: int = 200) -> str:
    data = {"connection_id": "c", "user_id": "u", "heartbeat_interval": heartbeat_interval, "server_time": "x"}
    return f"retry: {retry_ms}\n\n" + frame("connection.established", data)


def notification(nid: str, read: bool = False, title: str = "t") -> str:
    body: dict[str, Any] = {
        "id": nid,
        "event_type": "system.update",
        "user_id": "u",
        "content_request_id": None,
        "title": title,
        "message": "m",
        "progress_percentage": None,
        "metadata": {},
        "timestamp": "2026-11-28T10:00:00Z",
        "created_at": "2026-11-28T10:00:00Z",
        "read": read,
    }
    return frame("notification", body, nid)


def nid(n: int) -> str:
    return f"{n:024x}"


@dataclass
class FakeStream:
    port: int = field(default_factory=free_port)
    plans: deque[list[Step] | int | Refuse] = field(default_factory=deque)
    attempts: list[Attempt] = field(default_factory=list)
    history_calls: list[dict[str, str]] = field(default_factory=list)
    history: dict[str, Any] = field(
        default_factory=lambda: {"notifications": [], "unread_count": 0, "next_cursor": None}
    )
    # Tokens the history API answers 401 to (as the real service does for an expired or bad token).
    refused_tokens: set[str] = field(default_factory=set)
    refuse_from_call: int = 1  # the history call (1-based) from which refused_tokens are refused
    tickets: dict[str, str] = field(default_factory=dict)  # ticket -> the token it was asked with
    ticket_calls: list[str] = field(default_factory=list)  # the token of each ticket request
    refuse_tickets: int = 0  # answer this many ticket requests 401
    reused_tickets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> Starlette:
        async def page(request: Request) -> Response:
            return HTMLResponse(PAGE)

        async def client_js(request: Request) -> Response:
            return FileResponse(ROOT / "functions/stream/web/client.js", media_type="text/javascript")

        async def history(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            self.history_calls.append({"token": token, **request.query_params})
            if token in self.refused_tokens and len(self.history_calls) >= self.refuse_from_call:
                return JSONResponse({"error": {"code": "unauthorized", "message": "bad token"}}, status_code=401)
            return JSONResponse(self.history)

        async def ticket(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            self.ticket_calls.append(token)
            if self.refuse_tickets > 0:
                self.refuse_tickets -= 1
                return JSONResponse({"error": {"code": "unauthorized", "message": "bad token"}}, status_code=401)
            issued = f"tk-{len(self.ticket_calls)}"
            self.tickets[issued] = token
            return JSONResponse({"ticket": issued, "expires_in": 30})

        async def stream(request: Request) -> Response:
            query = dict(request.query_params)
            token = self.tickets.pop(query["ticket"], None) if "ticket" in query else query.get("token")
            if "ticket" in query and token is None:
                self.reused_tickets.append(query["ticket"])
            self.attempts.append(Attempt(query, dict(request.headers), time.monotonic(), token))
            plan: list[Step] | int | Refuse = self.plans.popleft() if self.plans else [established(), Hang()]
            if isinstance(plan, int):
                plan = Refuse(plan)
            if isinstance(plan, Refuse):
                error = {"error": {"code": plan.code, "message": "x"}}
                return JSONResponse(error, status_code=plan.status, headers=plan.headers)

            async def body() -> AsyncIterator[bytes]:
                for item in plan:
                    if isinstance(item, Pause):
                        await asyncio.sleep(item.seconds)
                    elif isinstance(item, Hang):
                        while not await request.is_disconnected():
                            await asyncio.sleep(0.05)
                    else:
                        yield item.encode()

            return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        return Starlette(
            routes=[
                Route("/", page),
                Route("/api/v1/notifications/client.js", client_js),
                Route("/api/v1/notifications/stream", stream),
                Route("/api/v1/notifications/stream-ticket", ticket, methods=["POST"]),
                Route("/api/v1/notifications", history),
            ]
        )

    def serve(self) -> uvicorn.Server:
        # log_config/log_level None: uvicorn must not reconfigure this process's loggers (other tests
        # assert on what the uvicorn loggers emit).
        config = uvicorn.Config(
            self.app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        wait_for(lambda: port_open("127.0.0.1", self.port), 10, what="the fake stream server")
        return server
