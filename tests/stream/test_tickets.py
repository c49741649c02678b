"""Stream tickets (SPEC section 4, functions/stream/tickets.py): one stream, one user, once, briefly.

The first tests check the ticket format and the redeemed-ticket records in
process; the rest run against the real service on the emulators, two instances
for single use across instances.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from functions.stream import tickets
from functions.stream.config import StreamSettings, load_stream_settings
from functions.stream.http import ApiError
from shared.backends.firestore_tickets import COLLECTION, FirestoreRedeemedTickets
from shared.backends.memory_tickets import MemoryRedeemedTickets
from shared.config import Settings
from shared.errors import ConfigError
from shared.logs import redact
from shared.tokens import Claims
from tests.support.emulators import EmulatorPair
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import SECRET, auth, start_stream_service, token_for

API = "/api/v1/notifications"
STREAM = f"{API}/stream"
TICKET = f"{API}/stream-ticket"


def _settings(**env: str) -> StreamSettings:
    return load_stream_settings({"JWT_SECRET": SECRET, **env})


def _claims(user: str = "u1", ttl: float = 600) -> Claims:
    exp = time.time() + ttl
    return Claims(user_id=user, expires_at=exp, raw={"sub": user, "exp": exp})


def _code(error: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return error.value.status, error.value.code


# ---- the ticket itself ------------------------------------------------------------


def test_a_ticket_names_its_user_and_never_outlives_its_token() -> None:
    settings = _settings()
    ticket, expires_in = tickets.issue(_claims("alice"), settings)
    read = tickets.read(ticket, settings)
    assert read.user_id == "alice" and expires_in == 30
    assert read.expires_at - time.time() <= 30
    short, short_in = tickets.issue(_claims("alice", ttl=5), settings)
    assert short_in <= 5 and tickets.read(short, settings).expires_at <= time.time() + 5
    assert "eyJ" not in ticket.split(".")[0] and ticket.startswith("st1."), "a ticket is not shaped like a JWT"


def test_tampered_foreign_and_expired_tickets_are_refused() -> None:
    settings = _settings()
    ticket, _ = tickets.issue(_claims("alice"), settings)
    prefix, payload, signature = ticket.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in (
        f"{prefix}.{flipped}.{signature}",
        f"{prefix}.{payload}.{signature[::-1]}",
        f"{prefix}.{payload}",
        "st2." + ticket[4:],
        token_for("alice"),  # a JWT is no ticket
        "x" * 5000,
        "",
    ):
        with pytest.raises(ApiError) as error:
            tickets.read(bad, settings)
        assert _code(error) == (401, "ticket_invalid"), bad[:40]
    # Signed with another key: STREAM_TICKET_SECRET, or another JWT_SECRET's derived key.
    other = load_stream_settings({"JWT_SECRET": "another-secret-0123456789abcdefghijklmnop"})
    with pytest.raises(ApiError) as error:
        tickets.read(ticket, other)
    assert _code(error) == (401, "ticket_invalid")
    with pytest.raises(ApiError) as error:
        tickets.read(ticket, _settings(STREAM_TICKET_SECRET="s" * 40))
    assert _code(error) == (401, "ticket_invalid")
    old, _ = tickets.issue(_claims("alice"), settings, now=time.time() - 31)
    with pytest.raises(ApiError) as error:
        tickets.read(old, settings)
    assert _code(error) == (401, "ticket_expired")


# A real key: the settings check that a PEM is readable before they look for a ticket secret.
_PUBLIC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAM_TICKET_TTL_SECONDS": "61"}, "STREAM_TICKET_TTL_SECONDS"),
        ({"STREAM_TICKET_SECRET": "short"}, "STREAM_TICKET_SECRET"),
        ({"JWT_PUBLIC_KEY": _PUBLIC_PEM}, "STREAM_TICKET_SECRET"),
    ],
)
def test_ticket_settings_are_checked_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(**env)


def test_ticket_query_values_are_redacted_in_logs() -> None:
    ticket, _ = tickets.issue(_claims(), _settings())
    line = redact(f'"GET /api/v1/notifications/stream?ticket={ticket}&last_event_id=00ab HTTP/1.1" 200')
    assert ticket not in line and ticket.split(".")[1] not in line and ticket.split(".")[2] not in line
    assert "ticket=[REDACTED]&last_event_id=00ab" in line
    assert ticket.split(".")[1] not in redact(f"refused {ticket}"), "a bare ticket is redacted too"


def test_memory_record_redeems_once_and_forgets_expired_ids() -> None:
    record = MemoryRedeemedTickets()
    assert record.redeem("a", time.time() + 60) is True
    assert record.redeem("a", time.time() + 60) is False
    for number in range(1000):
        record.redeem(f"old-{number}", time.time() - 1)
    record.redeem("b", time.time() + 60)
    assert len(record._expiry) == 2, "expired ids are not kept"


def test_firestore_record_redeems_once(emulators: EmulatorPair, settings: Settings) -> None:
    from google.cloud import firestore

    client = firestore.Client(project=settings.project_id)
    record = FirestoreRedeemedTickets(client, timeout=5)
    ticket_id = uuid.uuid4().hex
    expires_at = time.time() + 30
    assert record.redeem(ticket_id, expires_at) is True
    assert record.redeem(ticket_id, expires_at) is False
    stored = client.collection(COLLECTION).document(ticket_id).get().to_dict()
    assert stored is not None and abs(stored["expire_at"].timestamp() - expires_at) < 0.01
    assert set(stored) == {"expire_at"}, "nothing but the expiry: no user id, no ticket"


# ---- the running service ----------------------------------------------------------


@pytest.fixture
def http(stream_server: ManagedProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_server.url, timeout=10) as client:
        yield client


def _ticket(http: httpx.Client, token: str) -> str:
    response = http.post(TICKET, headers=auth(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"} and 1 <= body["expires_in"] <= 60
    assert response.headers["cache-control"] == "no-store"
    return str(body["ticket"])


def _refused(url: str, ticket: str, code: str) -> None:
    with EventStream(url + STREAM, params={"ticket": ticket}) as refused:
        assert refused.status == 401
        assert refused.error == {"error": {"code": code, "message": refused.error["error"]["message"]}}


def test_a_ticket_opens_one_stream_of_its_user_and_only_once(
    stream_server: ManagedProcess, http: httpx.Client, new_user: Callable[[], str]
) -> None:
    user = new_user()
    ticket = _ticket(http, token_for(user))
    with EventStream(stream_server.url + STREAM, params={"ticket": ticket}) as stream:
        assert stream.status == 200
        assert stream.wait_event("connection.established").json()["user_id"] == user
        _refused(stream_server.url, ticket, "ticket_used")
    _refused(stream_server.url, ticket, "ticket_used")  # also once the first stream has ended


def test_a_ticket_is_used_once_across_instances(
    stream_server: ManagedProcess, http: httpx.Client, emulators: EmulatorPair, new_user: Callable[[], str]
) -> None:
    other = start_stream_service(emulators.env())
    try:
        ticket = _ticket(http, token_for(new_user()))
        with EventStream(other.url + STREAM, params={"ticket": ticket}) as stream:
            assert stream.status == 200, "a ticket of one instance opens a stream on another"
            stream.wait_event("connection.established")
        _refused(stream_server.url, ticket, "ticket_used")
        _refused(other.url, ticket, "ticket_used")
    finally:
        other.stop()


def test_expired_and_forged_tickets_are_refused_by_the_service(
    stream_server: ManagedProcess, new_user: Callable[[], str]
) -> None:
    settings = _settings()
    expired, _ = tickets.issue(_claims(new_user()), settings, now=time.time() - 60)
    _refused(stream_server.url, expired, "ticket_expired")
    forged, _ = tickets.issue(_claims(new_user()), _settings(STREAM_TICKET_SECRET="f" * 40))
    _refused(stream_server.url, forged, "ticket_invalid")


def test_a_ticket_is_asked_for_with_a_valid_bearer_token_only(http: httpx.Client, new_user: Callable[[], str]) -> None:
    user = new_user()
    assert http.post(TICKET).json()["error"]["code"] == "unauthorized"
    in_query = http.post(TICKET, params={"token": token_for(user)})
    assert in_query.status_code == 401, "?token= would put the JWT back into a URL"
    expired = http.post(TICKET, headers=auth(token_for(user, ttl=-5)))
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "token_expired")
    refresh = http.post(TICKET, headers=auth(token_for(user, type="refresh")))
    assert (refresh.status_code, refresh.json()["error"]["code"]) == (403, "forbidden")
    ticket = _ticket(http, token_for(user))
    history = http.get(API, params={"ticket": ticket})
    assert history.status_code == 401, "a ticket opens a stream, nothing else"


def test_a_ticket_stream_ends_when_its_token_expires(
    stream_server: ManagedProcess, http: httpx.Client, new_user: Callable[[], str]
) -> None:
    ticket = _ticket(http, token_for(new_user(), ttl=3))
    with EventStream(stream_server.url + STREAM, params={"ticket": ticket}) as stream:
        assert stream.status == 200
        closing = stream.wait_event("stream.closing", timeout=10)
        assert closing.json() == {"reason": "token_expired"}


def test_neither_ticket_nor_token_reaches_the_log(
    stream_server: ManagedProcess, http: httpx.Client, new_user: Callable[[], str]
) -> None:
    token = token_for(new_user())
    ticket = _ticket(http, token)
    with EventStream(stream_server.url + STREAM, params={"ticket": ticket}) as stream:
        stream.wait_event("connection.established")
    _refused(stream_server.url, ticket, "ticket_used")
    log = stream_server.log()
    assert "ticket=[REDACTED]" in log, "the access log names the request, without its ticket"
    for secret in (ticket, ticket.split(".")[1], ticket.split(".")[2], token, token.split(".")[2]):
        assert secret not in log
