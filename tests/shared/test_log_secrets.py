"""No token reaches any log: every byte the stream service, the ingest function and the cleanup function print.

A scenario sends tokens everywhere a client, a misconfigured caller or an
attacker could put them: the Authorization header, ``?token=``, the
Last-Event-ID header, URL paths, history bodies, the push request of the ingest
function (as Pub/Sub push with authentication sends it), content events that
are invalid because of a token (so the reason is logged), and the cleanup
function's parameters. Valid, expired, wrongly signed and opaque tokens are
used. Then every process is stopped and its whole output (stdout and stderr)
is searched for each token and each signature, as written and percent-decoded
(the query is also sent with the parameter's name, the dots or the first
letter percent-encoded, which Starlette decodes).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import unquote

import httpx

from devtools.cli import publish_event
from shared.backends.pubsub_channel import ensure_topics
from shared.config import Settings
from tests.support.emulators import EmulatorPair
from tests.support.events import new_user, valid_event
from tests.support.processes import ManagedProcess, start_function
from tests.support.pubsub import PullSubscription, push_envelope
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for, wait_stored

PREFIX = "/api/v1/notifications"
OPAQUE = "opaque-secret-" + uuid.uuid4().hex


def _encoded_queries(token: str) -> list[str]:
    """The credential as a query Starlette reads after decoding: the bypasses once missed by redaction."""
    return [
        f"%74oken={token}",  # the parameter's name encoded
        f"t%6Fk%65n={token.replace('.', '%2E')}",  # and the dots
        f"token=%{ord(token[0]):02X}{token[1:]}",  # the first letter
        f"acc%65ss_token={token.replace('-', '%2D')}",
        f"ticket={token}",  # stream tickets
        f"%74icket={token.replace('.', '%2e')}",
    ]


def _stream_scenario(server: ManagedProcess, tokens: list[str], valid: str) -> None:
    url = server.url
    with EventStream(f"{url}{PREFIX}/stream", params={"token": valid}) as stream:
        stream.wait_event("connection.established")
    with EventStream(f"{url}{PREFIX}/stream", token=valid) as stream:
        stream.wait_event("connection.established")
    with httpx.Client(base_url=url, timeout=10) as client:

        def head(path: str, **kwargs: Any) -> None:
            # A stream that opens never ends by itself: read the answer's head only.
            with client.stream("GET", path, **kwargs):
                pass

        for token in [*tokens, OPAQUE]:  # where a credential belongs
            head(f"{PREFIX}/stream", params={"token": token})
            head(f"{PREFIX}/stream", headers={"Authorization": f"Bearer {token}"})
            client.get(PREFIX, params={"token": token})
            client.post(f"{PREFIX}/mark-read", params={"access_token": token}, json={"all": True})
        for token in [*tokens, OPAQUE]:  # percent-encoded: Starlette decodes the query, so must redaction
            for encoded in _encoded_queries(token):
                head(f"{PREFIX}/stream?{encoded}")
                client.get(f"{PREFIX}?{encoded}")
        for token in tokens:  # where it does not: a JWT is recognised and redacted wherever it is
            head(f"{PREFIX}/stream", headers={"Authorization": f"Bearer {valid}", "Last-Event-ID": token})
            client.get(PREFIX, params={"token": token, "cursor": token})
            client.get(PREFIX, headers={"Authorization": f"Bearer {token}"}, params={"limit": token})
            client.post(f"{PREFIX}/mark-read", headers={"Authorization": f"Bearer {valid}"}, json={"all": token})
            client.post(f"{PREFIX}/mark-read", params={"access_token": token}, content=token.encode())
            client.delete(f"{PREFIX}/{token}", headers={"Authorization": f"Bearer {valid}"})
            client.get(f"/{token}", params={"token": token})
            head(f"{PREFIX}/stream", headers={"Authorization": token})  # no "Bearer"
            head(f"{PREFIX}/stream", headers={"Authorization": f"Basic {token}"})


def _ingest_scenario(ingest: ManagedProcess, settings: Settings, tokens: list[str], user: str) -> None:
    path = f"/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    with httpx.Client(base_url=ingest.url, timeout=30) as client:
        for token in [*tokens, OPAQUE]:
            client.post(path, params={"token": token}, headers={"Authorization": f"Bearer {token}"}, json={})
        for token in tokens:
            events = [
                valid_event(user, title="fine"),
                {**valid_event(user), token: 1},  # unknown field named by the token
                valid_event(user, event_type=token),
                valid_event(token + "/x"),
                valid_event(user, metadata={"auth": token, "blob": "x" * 17_000}),  # too big: logged reason
            ]
            for number, event in enumerate(events):
                body = push_envelope(
                    json.dumps(event).encode(), {"token": token}, f"m-{uuid.uuid4().hex}", "projects/p/subscriptions/s"
                )
                # Pub/Sub push with authentication sends an OIDC token in Authorization.
                client.post(path, params={"token": token}, headers={"Authorization": f"Bearer {token}"}, json=body)
                if number == 0:
                    client.post(path, params={"token": token}, content=token.encode())  # not a push body at all


def _cleanup_scenario(cleanup: ManagedProcess, tokens: list[str]) -> None:
    with httpx.Client(base_url=cleanup.url, timeout=60) as client:
        client.get("/", params={"budget_seconds": "1", "token": OPAQUE})
        for token in tokens:
            client.get("/", params={"budget_seconds": token, "token": token})
            client.post("/", headers={"Authorization": f"Bearer {token}"}, json={"budget_seconds": token})
        response = client.post("/", params={"token": tokens[0]}, json={"budget_seconds": 5})
        assert response.status_code == 200, response.text


def test_no_token_or_signature_appears_in_any_process_output(
    emulators_session: EmulatorPair, settings: Settings, push_subscription: PullSubscription
) -> None:
    user = new_user("logs")
    valid = token_for(user)
    expired = token_for(user, ttl=-60)
    forged = valid.rsplit(".", 1)[0] + "." + token_for("someone-else").rsplit(".", 1)[1]
    other_user = token_for(new_user("other"))
    tokens = [valid, expired, forged, other_user]

    cleanup_project = f"logs-{uuid.uuid4().hex[:10]}"
    ensure_topics(cleanup_project, [settings.notifications_topic])
    env = {**emulators_session.env(), "LOG_LEVEL": "DEBUG"}
    stream = start_stream_service(env)
    ingest = start_function("functions/ingest/main.py", "ingest_content_event", env)
    cleanup = start_function(
        "functions/cleanup/main.py", "cleanup", {**env, "GOOGLE_CLOUD_PROJECT": cleanup_project}, signature="http"
    )
    processes = {"stream": stream, "ingest": ingest, "cleanup": cleanup}
    try:
        publish_event(settings.project_id, settings.content_events_topic, valid_event(user, title=valid[:100]))
        wait_stored(stream, valid, 1)
        _stream_scenario(stream, tokens, valid)
        _ingest_scenario(ingest, settings, tokens, user)
        _cleanup_scenario(cleanup, tokens)
    finally:
        for process in processes.values():
            process.stop()

    logs = {name: process.log() for name, process in processes.items()}
    # The scenario did reach every process (each logged requests), so the search below means something.
    assert f"{PREFIX}/stream?token=[REDACTED]" in logs["stream"]
    assert "dead-lettered" in logs["ingest"] and "cleanup run finished" in logs["cleanup"]
    assert "%74oken=[REDACTED]" in logs["stream"], "the encoded requests reached the access log"
    for name, raw in logs.items():
        text = raw + unquote(raw) + unquote(unquote(raw))  # searched as written and as a server would decode it
        for token in tokens:
            signature = token.rsplit(".", 1)[1]
            assert token not in text, f"a token in the {name} output"
            assert signature not in text, f"a token signature in the {name} output"
            assert token.split(".")[1] not in text, f"a token payload in the {name} output"
        assert OPAQUE not in text, f"an opaque ?token= value in the {name} output"
