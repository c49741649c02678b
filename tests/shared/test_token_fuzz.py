"""Hypothesis: every mutation of a valid token is refused, whatever the mutation and the key type."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

from functions.stream.config import load_stream_settings
from shared.errors import AuthError, ConfigError
from shared.tokens import load_token_settings, mint_token, verify_token
from tests.support.fuzzing import examples

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


@settings(max_examples=examples(500), deadline=None)
@given(position=st.integers(0, len(VALID) - 1), replacement=st.sampled_from(ALPHABET))
def test_any_single_character_change_is_refused(position: int, replacement: str) -> None:
    mutated = VALID[:position] + replacement + VALID[position + 1 :]
    # Base64 ignores the low bits of a segment's last character: such a change is no change.
    assume(_segments(mutated) != _segments(VALID))
    assert _refused(mutated)


@settings(max_examples=examples(200), deadline=None)
@given(cut=st.integers(0, len(VALID) - 1), tail=st.text(alphabet=ALPHABET, max_size=10))
def test_truncated_or_extended_tokens_are_refused(cut: int, tail: str) -> None:
    mutated = VALID[:cut] + tail
    assume(mutated != VALID and _segments(mutated) != _segments(VALID))
    assert _refused(mutated)


@settings(max_examples=examples(200), deadline=None)
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


# Across key types: a verifier configured with an HS256 secret, an RSA key or a
# P-256 key, fed tokens whose header names any algorithm (also those of the other
# key types: RSA key + "ES256" made PyJWT raise InvalidKeyError, a 500), with odd
# claims (exp of 1e400 made it raise OverflowError), signed by any of the keys.
# The only acceptable outcomes: AuthError 401/403, or claims when the token was
# signed by the configured key with its own algorithm.

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_EC384 = ec.generate_private_key(ec.SECP384R1())


def _pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


HS_SECRET = "fuzz-secret-0123456789abcdefghijklmnop"
VERIFIERS = {
    "HS256": load_token_settings({"JWT_SECRET": HS_SECRET}),
    "RS256": load_token_settings({"JWT_PUBLIC_KEY": _pem(_RSA)}),
    "ES256": load_token_settings({"JWT_PUBLIC_KEY": _pem(_EC)}),
}


def _hmac(secret: bytes, hash_alg: Any) -> Callable[[bytes], bytes]:
    return lambda message: HMACAlgorithm(hash_alg).sign(message, secret)


SIGNERS: dict[str, Callable[[bytes], bytes]] = {
    "HS256": _hmac(HS_SECRET.encode(), HMACAlgorithm.SHA256),
    "HS512": _hmac(HS_SECRET.encode(), HMACAlgorithm.SHA512),
    "HS256 with the RSA public key": _hmac(_pem(_RSA).encode(), HMACAlgorithm.SHA256),
    "HS256 with the EC public key": _hmac(_pem(_EC).encode(), HMACAlgorithm.SHA256),
    "RS256": lambda message: RSAAlgorithm(RSAAlgorithm.SHA256).sign(message, _RSA),
    "RS512": lambda message: RSAAlgorithm(RSAAlgorithm.SHA512).sign(message, _RSA),
    "PS256": lambda message: RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256).sign(message, _RSA),
    "ES256": lambda message: ECAlgorithm(ECAlgorithm.SHA256).sign(message, _EC),
    "ES384 on P-384": lambda message: ECAlgorithm(ECAlgorithm.SHA384).sign(message, _EC384),
    "random bytes": lambda message: hashlib.sha512(message).digest()[:40],
    "empty": lambda message: b"",
}
ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA", "none"]
header_algs = st.sampled_from(ALGS) | st.sampled_from(["", "hs256", "Es256", "RS256 "]) | st.none() | st.integers()
header_extras = st.dictionaries(
    st.sampled_from(["kid", "jku", "x5u", "crit", "typ", "b64", "jwk", "cty"]),
    st.none() | st.booleans() | st.text(max_size=8) | st.lists(st.text(max_size=4), max_size=2),
    max_size=3,
)
# Raw JSON snippets, so NaN, 1e400 and escaped lone surrogates reach the parser as an attacker writes them.
number_snippets = st.sampled_from(
    ["1e400", "-1e400", "NaN", "Infinity", "1" * 30, "-1", "0", "4102444800", "4102444800.5", "true", '"4102444800"']
)
sub_snippets = st.sampled_from(['"u1"', '"\\ud800"', '"a\\udfffb"', '""', '"a/b"', '"__x__"', "7", "null", '["u1"]'])
type_snippets = st.sampled_from(['"access"', '"refresh"', "1", "null", '{"a":1}'])


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    fields = {"sub": draw(sub_snippets), "exp": draw(number_snippets)}
    for name, values in (("iat", number_snippets), ("nbf", number_snippets), ("type", type_snippets)):
        if draw(st.booleans()):
            fields[name] = draw(values)
    if draw(st.booleans()):
        fields["aud"] = draw(st.sampled_from(['"x"', '["x", 1]', "{}", "5"]))
    drop = draw(st.sampled_from([None, "sub", "exp"]))
    body = ",".join(f'"{k}":{v}' for k, v in fields.items() if k != drop)
    return ("{" + body + "}").encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@settings(max_examples=examples(600), deadline=None)
@given(
    verifier=st.sampled_from(sorted(VERIFIERS)),
    alg=header_algs,
    extras=header_extras,
    payload=payloads(),
    signer=st.sampled_from(sorted(SIGNERS)),
)
def test_any_token_on_any_key_type_is_a_401_or_403_or_properly_signed(
    verifier: str, alg: object, extras: dict[str, object], payload: bytes, signer: str
) -> None:
    header = json.dumps({**extras, "alg": alg}).encode()
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    token = f"{signing_input}.{_b64(SIGNERS[signer](signing_input.encode()))}"
    try:
        claims = verify_token(token, VERIFIERS[verifier])
    except AuthError as refused:
        assert refused.status in (401, 403)
        return
    assert signer == verifier == alg, f"accepted a {alg} token signed by {signer} on a {verifier} verifier"
    assert claims.user_id == "u1"


def test_a_verifier_refuses_the_algorithms_of_other_key_types() -> None:
    """The reported case, named: an RSA key and a header saying ES256 (and the reverse)."""
    for verifier, alg in (("RS256", "ES256"), ("ES256", "RS256"), ("RS256", "HS256"), ("ES256", "HS256")):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = _b64(json.dumps({"sub": "u1", "exp": 4102444800}).encode())
        for signer in SIGNERS:
            signing_input = f"{header}.{payload}"
            token = f"{signing_input}.{_b64(SIGNERS[signer](signing_input.encode()))}"
            with pytest.raises(AuthError) as refused:
                verify_token(token, VERIFIERS[verifier])
            assert refused.value.status == 401


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----", "readable"),
        (_pem(_EC384), "P-256"),
        (_pem(ed25519.Ed25519PrivateKey.generate()), "RSA key"),
        (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048"),  # noqa: S505 - on purpose
    ],
    ids=["garbage-pem", "p384", "ed25519", "rsa-1024"],
)
def test_a_public_key_that_cannot_verify_tokens_is_refused_at_start(key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"JWT_PUBLIC_KEY.*{reason}"):
        load_token_settings({"JWT_PUBLIC_KEY": key})
