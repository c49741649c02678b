import time

import jwt
import pytest

from functions.stream.config import load_stream_settings
from shared.errors import AuthError
from shared.tokens import mint_token, verify_token

SETTINGS = load_stream_settings({"JWT_SECRET": "unit-test-secret-0123456789abcdefghij"})
OTHER_SECRET = "another-secret-0123456789abcdefghijkl"


def test_minted_token_verifies() -> None:
    claims = verify_token(mint_token("u1", SETTINGS), SETTINGS)
    assert claims.user_id == "u1"
    assert claims.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("", 401),
        ("not-a-jwt", 401),
        (jwt.encode({"sub": "u1", "exp": int(time.time()) - 5}, SETTINGS.jwt_secret, algorithm="HS256"), 401),
        (jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, OTHER_SECRET, algorithm="HS256"), 401),
        (jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, "", algorithm="none"), 401),
        (jwt.encode({"exp": int(time.time()) + 60}, SETTINGS.jwt_secret, algorithm="HS256"), 401),
        (jwt.encode({"sub": "u1"}, SETTINGS.jwt_secret, algorithm="HS256"), 401),
        (jwt.encode({"sub": "a/b", "exp": int(time.time()) + 60}, SETTINGS.jwt_secret, algorithm="HS256"), 401),
        (mint_token("u1", SETTINGS, extra={"type": "refresh"}), 403),
    ],
    ids=["empty", "garbage", "expired", "wrong-key", "alg-none", "no-sub", "no-exp", "bad-sub", "refresh"],
)
def test_bad_tokens_are_refused(token: str, status: int) -> None:
    with pytest.raises(AuthError) as raised:
        verify_token(token, SETTINGS)
    assert raised.value.status == status


@pytest.mark.parametrize("algorithm", ["none", "HS512"])
def test_a_token_of_another_algorithm_is_refused_as_such(algorithm: str) -> None:
    """The header's alg is checked by the library (the header is parsed once); the refusal names the cause."""
    key = "" if algorithm == "none" else SETTINGS.jwt_secret * 2  # HS512 wants 64 bytes
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, key, algorithm=algorithm)
    with pytest.raises(AuthError, match="algorithm is not accepted") as raised:
        verify_token(token, SETTINGS)
    assert raised.value.status == 401
