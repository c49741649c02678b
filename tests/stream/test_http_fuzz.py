"""Fuzzing the stream service over HTTP (a real uvicorn process on the memory backend).

- Mutated tokens (characters changed, cut, extended, segments re-encoded with
  other algorithms or claims, re-signed with another key, arbitrary text) sent
  to the stream and every history endpoint, in the Authorization header or in
  ``?token=``: always 401/403 with a JSON error, never a 200 and never a 500.
- Hypothesis-generated JSON and bytes as history bodies, and query parameters
  of the list call: a 4xx JSON error or a well-formed answer, never a 500.

tests/shared/test_token_fuzz.py fuzzes ``verify_token`` itself; this goes
through the HTTP layer (header parsing, query decoding, error handlers).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.fuzzing import examples
from tests.support.processes import ManagedProcess
from tests.support.stream import SECRET, token_for

PREFIX = "/api/v1/notifications"
USER = "fuzz-user"
VALID = token_for(USER, ttl=3600)
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
AUTH_CODES = {"unauthorized", "token_expired", "forbidden"}
FUZZ = settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(memory_service: ManagedProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=memory_service.url, timeout=10) as http:
        yield http


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> list[bytes] | None:
    try:
        return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.strip().split(".")]
    except (ValueError, TypeError):
        return None


HEADER, PAYLOAD, SIGNATURE = VALID.split(".")
CLAIMS = json.loads(base64.urlsafe_b64decode(PAYLOAD + "=" * (-len(PAYLOAD) % 4)))

single_change = st.builds(
    lambda i, c: VALID[:i] + c + VALID[i + 1 :], st.integers(0, len(VALID) - 1), st.sampled_from(PRINTABLE)
)
cut_or_extended = st.builds(
    lambda i, tail: VALID[:i] + tail, st.integers(0, len(VALID)), st.text(PRINTABLE, max_size=20)
)
other_header = st.builds(
    lambda alg: ".".join([_b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()), PAYLOAD, SIGNATURE]),
    st.sampled_from(["none", "None", "HS384", "HS512", "RS256", "ES256", "", "hs256"]),
)
unsigned = st.builds(lambda sig: f"{HEADER}.{PAYLOAD}.{sig}", st.sampled_from(["", "x", SIGNATURE[:-4]]))
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(st.text(max_size=12), st.integers(), st.none(), st.just("someone-else")),
        "exp": st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=5), st.floats(allow_nan=False)),
        "type": st.text(max_size=8),
        "iat": st.integers(),
        "nbf": st.integers(0, 2**40),
    },
)
forged_payload = st.builds(lambda c: f"{HEADER}.{_b64(json.dumps(c).encode())}.{SIGNATURE}", claims)
other_key = st.builds(
    lambda c, key: jwt.encode({"sub": "someone-else", "exp": CLAIMS["exp"], **c}, key, algorithm="HS256"),
    claims,
    st.text(PRINTABLE, min_size=32, max_size=40).filter(lambda k: k != SECRET),
)
arbitrary = st.text(PRINTABLE + " ", max_size=200)
tokens = st.one_of(single_change, cut_or_extended, other_header, unsigned, forged_payload, other_key, arbitrary)

ENDPOINTS = [
    ("GET", f"{PREFIX}/stream", None),
    ("GET", PREFIX, None),
    ("POST", f"{PREFIX}/mark-read", {"all": True}),
    ("POST", f"{PREFIX}/mark-unread", {"notification_ids": ["0" * 24]}),
    ("DELETE", f"{PREFIX}/{'0' * 24}", None),
    ("DELETE", PREFIX, None),
]


def _send(client: httpx.Client, method: str, path: str, body: Any, token: str, in_header: bool) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if in_header else {}
    params = {} if in_header else {"token": token}
    request = client.build_request(method, path, headers=headers, params=params, json=body)
    response = client.send(request, stream=True)  # a stream that opened would never end: read the head only
    try:
        if response.status_code != 200:
            response.read()
    finally:
        response.close()
    return response


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens, endpoint=st.sampled_from(ENDPOINTS), in_header=st.booleans())
def test_every_mutated_token_is_refused_with_json_on_every_endpoint(
    client: httpx.Client, token: str, endpoint: tuple[str, str, Any], in_header: bool
) -> None:
    # Base64 ignores the low bits of a segment's last character: such a change is no change.
    assume(_segments(token) != _segments(VALID))
    if in_header:
        assume(token.strip() != "" and token == token.strip())  # httpx refuses edge whitespace in headers
    method, path, body = endpoint
    response = _send(client, method, path, body, token, in_header)
    assert response.status_code in (401, 403), (response.status_code, token)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] in AUTH_CODES


def test_the_unmutated_token_is_accepted_through_both_transports(client: httpx.Client) -> None:
    for in_header in (True, False):
        assert _send(client, "GET", PREFIX, None, VALID, in_header).status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=40,
)
id_like = st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9a-f]{24}\Z"), st.integers(), st.none())
mark_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "notification_ids": st.one_of(st.lists(id_like, max_size=8), json_values),
            "all": st.one_of(st.booleans(), json_values),
            "user_id": st.text(max_size=10),
        },
    ),
)


@FUZZ
@given(body=mark_bodies, path=st.sampled_from(["mark-read", "mark-unread"]))
def test_hypothesis_json_bodies_get_a_4xx_json_or_a_count_never_a_500(
    client: httpx.Client, body: Any, path: str
) -> None:
    response = client.post(f"{PREFIX}/{path}", json=body, headers={"Authorization": f"Bearer {VALID}"})
    assert response.status_code in (200, 400), (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code == 200:
        assert response.json() == {"updated": 0}  # the fuzz user has no notifications
    else:
        assert response.json()["error"]["code"] == "bad_request"


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain", "", "x/y"]))
def test_arbitrary_bytes_as_a_body_never_give_a_500(client: httpx.Client, raw: bytes, content_type: str) -> None:
    headers = {"Authorization": f"Bearer {VALID}", "Content-Type": content_type}
    response = client.post(f"{PREFIX}/mark-read", content=raw, headers=headers)
    assert response.status_code in (200, 400), (response.status_code, raw)
    assert response.headers["content-type"].startswith("application/json")


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "unread_only", "token", "other"]), st.text(max_size=40), max_size=4
    )
)
def test_hypothesis_query_parameters_of_the_list_call_never_give_a_500(
    client: httpx.Client, params: dict[str, str]
) -> None:
    params.pop("token", None)  # the token goes in the header; a second one in the query is ignored
    response = client.get(PREFIX, params=params, headers={"Authorization": f"Bearer {VALID}"})
    assert response.status_code in (200, 400), (response.status_code, params)
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code == 200:
        assert response.json()["notifications"] == []
