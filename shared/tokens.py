"""JWT access tokens: verification for the stream service, minting for development.

HS256 with JWT_SECRET, or RS256/ES256 with JWT_PUBLIC_KEY; never ``none`` and
never an algorithm the configured key was not meant for (so an RS256 public
key cannot be used as an HS256 secret).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import Settings
from shared.errors import AuthError, InvalidEventError
from shared.events import validate_user_id


@dataclass(frozen=True)
class Claims:
    user_id: str
    expires_at: float
    raw: dict[str, Any]


def _algorithms(settings: Settings) -> list[str]:
    if settings.jwt_public_key:
        return ["RS256", "ES256"]
    return ["HS256"]


def verify_token(token: str, settings: Settings, *, now: float | None = None) -> Claims:
    """The claims of a valid access token; AuthError (401 or 403) otherwise."""
    if not token or len(token) > 8192:
        raise AuthError("missing or oversized token")
    key: Any = settings.jwt_public_key or settings.jwt_secret
    options: Any = {"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None}
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in _algorithms(settings):
            raise AuthError(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted")
        claims = jwt.decode(
            token,
            key,
            algorithms=_algorithms(settings),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=options,
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", code="token_expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from None
    except (ValueError, TypeError):
        raise AuthError("invalid token") from None
    token_type = claims.get("type", "access")
    if token_type != "access":  # noqa: S105 - a claim value, not a password
        raise AuthError("only access tokens may open streams", status=403, code="forbidden")
    try:
        user_id = validate_user_id(claims.get("sub"), "sub")
    except InvalidEventError as exc:
        raise AuthError(f"invalid token subject: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise AuthError("token exp must be a number")
    if now is not None and exp <= now:
        raise AuthError("token expired", code="token_expired")
    return Claims(user_id=user_id, expires_at=float(exp), raw=claims)


def mint_token(
    user_id: str,
    settings: Settings,
    *,
    ttl_seconds: float = 3600,
    private_key: str | None = None,
    algorithm: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed access token for ``user_id`` (development tool and tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + int(ttl_seconds),
        "type": "access",
        "jti": uuid.uuid4().hex,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    if private_key is not None:
        return jwt.encode(claims, private_key, algorithm=algorithm or "RS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
