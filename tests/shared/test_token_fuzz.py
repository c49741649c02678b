"""Hypothesis: every mutation of a valid token is refused, whatever the mutation."""

from __future__ import annotations

import base64
import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from functions.stream.config import load_stream_settings
from shared.errors import AuthError
from shared.tokens import mint_token, verify_token

SETTINGS = load_stream_settings({"JWT_SECRET": "fuzz-secret-0123456789abcdefghijklmnop"})
VALID = mint_token("u1", SETTINGS, ttl_seconds=3600)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="


def _segments(token: str) -> list[bytes] | None:
    try:
        return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]
    except (ValueError, TypeError):
        return None


def _refused(token: str) -> bool:
    try:
        verify_token(token, SETTINGS)
    except AuthError:
        return True
    return False


def test_the_unmutated_token_is_accepted() -> None:
    assert verify_token(VALID, SETTINGS).user_id == "u1"


@settings(max_examples=500, deadline=None)
@given(position=st.integers(0, len(VALID) - 1), replacement=st.sampled_from(ALPHABET))
def test_any_single_character_change_is_refused(position: int, replacement: str) -> None:
    mutated = VALID[:position] + replacement + VALID[position + 1 :]
    # Base64 ignores the low bits of a segment's last character: such a change is no change.
    assume(_segments(mutated) != _segments(VALID))
    assert _refused(mutated)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(VALID) - 1), tail=st.text(alphabet=ALPHABET, max_size=10))
def test_truncated_or_extended_tokens_are_refused(cut: int, tail: str) -> None:
    mutated = VALID[:cut] + tail
    assume(mutated != VALID and _segments(mutated) != _segments(VALID))
    assert _refused(mutated)


@settings(max_examples=200, deadline=None)
@given(
    claims=st.fixed_dictionaries(
        {"sub": st.text(max_size=10) | st.integers()},
        optional={"exp": st.integers() | st.text(max_size=5), "type": st.text(max_size=8), "aud": st.text(max_size=5)},
    ),
    alg=st.sampled_from(["none", "HS256", "HS512", "RS256", "ES256", "", "hs256"]),
)
def test_re_signed_or_unsigned_payloads_are_refused(claims: dict[str, object], alg: str) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    signature = VALID.rsplit(".", 1)[1]
    assert _refused(f"{header}.{payload}.{signature}")
    assert _refused(f"{header}.{payload}.")
