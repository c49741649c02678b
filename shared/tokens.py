"""JWT access tokens: verification for the stream service, minting for development.

HS256 with JWT_SECRET, or RS256/ES256 with JWT_PUBLIC_KEY; never ``none`` and
never an algorithm the configured key was not meant for (so an RS256 public
key cannot be used as an HS256 secret).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import flag, optional
from shared.errors import AuthError, ConfigError, InvalidEventError
from shared.events import validate_user_id

# Public on purpose: accepted only in local mode (NOTIFICATIONS_LOCAL_MODE=true).
DEV_JWT_SECRET = "local-development-secret-not-for-production"  # noqa: S105


@dataclass(frozen=True)
class TokenSettings:
    """How tokens are verified (the stream service) and minted (development tools, tests)."""

    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_public_key is None and self.jwt_secret == DEV_JWT_SECRET


def token_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """JWT_SECRET / JWT_PUBLIC_KEY / JWT_AUDIENCE / JWT_ISSUER as keyword arguments.

    Without a key the public development secret is used only in local mode;
    anywhere else (Cloud Run, GKE, a VM, plain Docker) the process refuses to start.
    """
    public_key = optional(env, "JWT_PUBLIC_KEY")
    if public_key and "-----BEGIN" not in public_key:
        raise ConfigError("JWT_PUBLIC_KEY must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    secret = optional(env, "JWT_SECRET")
    if secret is None and public_key is None:
        if not flag(env, "NOTIFICATIONS_LOCAL_MODE", False):
            raise ConfigError(
                "JWT_SECRET (or JWT_PUBLIC_KEY) must be set; only NOTIFICATIONS_LOCAL_MODE=true "
                "may use the public development secret"
            )
        secret = DEV_JWT_SECRET
    if public_key is None and secret is not None and len(secret) < 32:
        raise ConfigError("JWT_SECRET must be at least 32 characters long (HS256 wants a 256-bit key)")
    return {
        "jwt_secret": secret or "",
        "jwt_public_key": public_key,
        "jwt_audience": optional(env, "JWT_AUDIENCE"),
        "jwt_issuer": optional(env, "JWT_ISSUER"),
    }


def load_token_settings(env: Mapping[str, str]) -> TokenSettings:
    return TokenSettings(**token_fields(env))


@dataclass(frozen=True)
class Claims:
    user_id: str
    expires_at: float
    raw: dict[str, Any]


def _algorithms(settings: TokenSettings) -> list[str]:
    if settings.jwt_public_key:
        return ["RS256", "ES256"]
    return ["HS256"]


def verify_token(token: str, settings: TokenSettings, *, now: float | None = None) -> Claims:
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
    settings: TokenSettings,
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
