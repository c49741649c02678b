"""Stream tickets from a page, against the real service: once, briefly, and never the JWT in a URL."""

from __future__ import annotations

import time
from typing import Any

from functions.stream import tickets
from functions.stream.config import StreamSettings
from shared.tokens import Claims, mint_token
from tests.support.browser import StreamServer, Worker

# In the page: ask for a ticket with the bearer token, open an EventSource with it, and report.
OPEN_WITH_TICKET = """async (token) => {
  const answer = await fetch("/api/v1/notifications/stream-ticket", {
    method: "POST", headers: { Authorization: `Bearer ${token}` } });
  const { ticket, expires_in } = await answer.json();
  const established = await new Promise((resolve, reject) => {
    const source = new EventSource(`/api/v1/notifications/stream?ticket=${encodeURIComponent(ticket)}`);
    source.addEventListener("connection.established", (event) => { source.close(); resolve(JSON.parse(event.data)); });
    source.onerror = () => { source.close(); reject(new Error("refused")); };
  });
  return { ticket, expires_in, user: established.user_id };
}"""

# The answer to a stream request with this ticket, as the page sees it.
ANSWER = """async (ticket) => {
  const response = await fetch(`/api/v1/notifications/stream?ticket=${encodeURIComponent(ticket)}`);
  return { status: response.status, type: response.headers.get("content-type"), body: await response.json() };
}"""


def test_a_ticket_opens_one_stream_and_is_refused_reused_or_expired(
    context: Any, stream_server: StreamServer, worker: Worker, stack_settings: StreamSettings
) -> None:
    token = mint_token(worker.user_id, stack_settings, ttl_seconds=600)
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{stream_server.url}/api/v1/notifications/health")

    opened = page.evaluate(OPEN_WITH_TICKET, token)
    assert opened["user"] == worker.user_id and 1 <= opened["expires_in"] <= 60

    reused = page.evaluate(ANSWER, opened["ticket"])
    assert reused["status"] == 401 and reused["type"].startswith("application/json")
    assert reused["body"]["error"]["code"] == "ticket_used" and reused["body"]["error"]["message"]

    claims = Claims(user_id=worker.user_id, expires_at=time.time() + 600, raw={})
    expired, _ = tickets.issue(claims, stack_settings, now=time.time() - 61)
    late = page.evaluate(ANSWER, expired)
    assert late["status"] == 401 and late["body"]["error"]["code"] == "ticket_expired"

    # The client library the same way, end to end.
    page.expose_function("getTestToken", lambda: token)
    page.evaluate(
        """async () => {
          const { NotificationClient } = await import("/api/v1/notifications/client.js");
          window.client = new NotificationClient({ getToken: () => window.getTestToken() });
          await window.client.start();
        }"""
    )
    page.wait_for_function("() => client.state === 'connected'", timeout=15_000)
    worker.publish(title="Through a ticket", content_request_id="req-ticket")
    page.wait_for_function("() => client.notifications.some(n => n.title === 'Through a ticket')", timeout=15_000)

    assert sum("/stream?ticket=" in url for url in urls) >= 4
    assert not [url for url in urls if token in url or token.split(".")[2] in url], "the JWT is in no URL"
