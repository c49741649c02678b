"""JWT access tokens: verification for the stream service, minting for development.

HS256 with JWT_SECRET, or with JWT_PUBLIC_KEY the one algorithm its key type
signs (RS256 for an RSA key, ES256 for a P-256 key); never ``none`` and never an
algorithm the configured key was not meant for (so an RS256 public key cannot be
used as an HS256 secret, nor an RSA key handed to the ES256 verifier). Whatever
a token makes the JWT library raise is a refusal (401), never a 500: the token
is the attacker's input.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.config import flag, optional
from shared.errors import AuthError, ConfigError, InvalidEventError
from shared.events import validate_user_id

logger = logging.getLogger(__name__)

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
    if public_key is not None:
        public_verification_key(public_key)  # refuse a key that cannot verify anything, at start
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


MIN_RSA_BITS = 2048


@functools.lru_cache(maxsize=8)
def public_verification_key(pem: str) -> tuple[Any, str]:
    """JWT_PUBLIC_KEY loaded once, and the one algorithm it verifies; ConfigError if it cannot be used."""
    if "-----BEGIN" not in pem:
        raise ConfigError("JWT_PUBLIC_KEY must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"JWT_PUBLIC_KEY is not a readable PEM public key: {type(exc).__name__}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"JWT_PUBLIC_KEY is an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError("JWT_PUBLIC_KEY must be an RSA key (RS256) or an EC key on P-256 (ES256)")


def _verification(settings: TokenSettings) -> tuple[Any, str]:
    if settings.jwt_public_key:
        return public_verification_key(settings.jwt_public_key)
    return settings.jwt_secret, "HS256"


def verify_token(token: str, settings: TokenSettings, *, now: float | None = None) -> Claims:
    """The claims of a valid access token; AuthError (401 or 403) otherwise."""
    if not token or len(token) > 8192:
        raise AuthError("missing or oversized token")
    key, algorithm = _verification(settings)
    options: Any = {"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None}
    try:
        # ``algorithms`` makes the library refuse any other header ``alg`` (``none``
        # included) before it touches the key: the header is parsed once.
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=options,
            leeway=0,
        )
    except jwt.InvalidAlgorithmError:
        raise AuthError(f"token algorithm is not accepted (this service takes {algorithm})") from None
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", code="token_expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. OverflowError on an exp of 1e400: still the token's fault
        # Logged (without the token) because it is the library's gap, worth knowing about.
        logger.warning("token refused after an unexpected %s in the JWT library", type(exc).__name__)
        raise AuthError("invalid token") from None
    if not isinstance(claims, dict):
        raise AuthError("token claims must be a JSON object")
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
