"""Configuration, read once from the environment into a frozen, typed object.

Every variable has a default that works for a local run; a value that cannot be
parsed fails at start with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from shared.errors import ConfigError

# Public on purpose: refused when running on Google Cloud (see load_settings).
DEV_JWT_SECRET = "local-development-secret-not-for-production"  # noqa: S105

Backend = Literal["gcp", "memory"]


@dataclass(frozen=True)
class Settings:
    project_id: str = "notifications-local"
    backend: Backend = "gcp"
    content_events_topic: str = "content-generation-events"
    dead_letter_topic: str = "content-generation-events-dead-letter"
    notifications_topic: str = "user-notifications"
    notification_retention_days: int = 30
    event_max_age_seconds: int = 3600
    backend_timeout_seconds: float = 10.0
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    sse_heartbeat_interval: float = 30.0
    sse_max_connections_per_user: int = 3
    sse_max_backlog_messages: int = 100
    sse_max_stream_seconds: float = 3300.0
    sse_connection_timeout: float = 300.0
    sse_retry_ms: int = 3000
    sse_send_queue_size: int = 256
    cors_allowed_origins: tuple[str, ...] = ()
    demo_page: bool = False
    # Bench only: POST /internal/bench/inject on the stream service (never on by default).
    stream_bench_inject: bool = False
    stream_stats_interval: float = 60.0
    log_level: str = "INFO"
    running_on_gcp: bool = False

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_public_key is None and self.jwt_secret == DEV_JWT_SECRET


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {raw!r}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _topic(env: Mapping[str, str], name: str, default: str) -> str:
    value = _text(env, name, default)
    if "/" in value or len(value) < 3 or len(value) > 255:
        raise ConfigError(f"{name} must be a bare topic id (3-255 characters, no '/'), got {value!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    running_on_gcp = bool(env.get("K_SERVICE") or (env.get("FUNCTION_TARGET") and env.get("K_REVISION")))
    public_key = _optional(env, "JWT_PUBLIC_KEY")
    if public_key and "-----BEGIN" not in public_key:
        raise ConfigError("JWT_PUBLIC_KEY must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
    secret = _text(env, "JWT_SECRET", DEV_JWT_SECRET)
    # Functions that never verify tokens (ingest, cleanup) are deployed with
    # JWT_SECRET_REQUIRED=false, so they need no access to the secret.
    secret_required = _flag(env, "JWT_SECRET_REQUIRED", True)
    if running_on_gcp and secret_required and public_key is None and secret == DEV_JWT_SECRET:
        raise ConfigError("JWT_SECRET must be set in production (K_SERVICE is set) unless JWT_PUBLIC_KEY is")
    if public_key is None and len(secret) < 32:
        raise ConfigError("JWT_SECRET must be at least 32 characters long (HS256 wants a 256-bit key)")
    heartbeat = _number(env, "SSE_HEARTBEAT_INTERVAL", 30.0, minimum=0.05, maximum=3600)
    origins = tuple(o.strip() for o in env.get("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip())
    level = _choice(env, "LOG_LEVEL", "INFO", ("debug", "info", "warning", "error")).upper()
    return Settings(
        project_id=_text(env, "GOOGLE_CLOUD_PROJECT", "notifications-local"),
        backend="memory" if _choice(env, "NOTIFICATIONS_BACKEND", "gcp", ("gcp", "memory")) == "memory" else "gcp",
        content_events_topic=_topic(env, "CONTENT_EVENTS_TOPIC", "content-generation-events"),
        dead_letter_topic=_topic(env, "CONTENT_EVENTS_DEAD_LETTER_TOPIC", "content-generation-events-dead-letter"),
        notifications_topic=_topic(env, "NOTIFICATIONS_TOPIC", "user-notifications"),
        notification_retention_days=_integer(env, "NOTIFICATION_RETENTION_DAYS", 30, minimum=1, maximum=3650),
        event_max_age_seconds=_integer(env, "EVENT_MAX_AGE_SECONDS", 3600, minimum=1, maximum=7 * 86400),
        backend_timeout_seconds=_number(env, "BACKEND_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=300),
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_audience=_optional(env, "JWT_AUDIENCE"),
        jwt_issuer=_optional(env, "JWT_ISSUER"),
        sse_heartbeat_interval=heartbeat,
        sse_max_connections_per_user=_integer(env, "SSE_MAX_CONNECTIONS_PER_USER", 3, minimum=1, maximum=1000),
        sse_max_backlog_messages=_integer(env, "SSE_MAX_BACKLOG_MESSAGES", 100, minimum=1, maximum=1000),
        sse_max_stream_seconds=_number(env, "SSE_MAX_STREAM_SECONDS", 3300.0, minimum=1, maximum=86400),
        sse_connection_timeout=_number(env, "SSE_CONNECTION_TIMEOUT", 300.0, minimum=1, maximum=86400),
        sse_retry_ms=_integer(env, "SSE_RETRY_MS", 3000, minimum=0, maximum=600_000),
        sse_send_queue_size=_integer(env, "SSE_SEND_QUEUE_SIZE", 256, minimum=1, maximum=100_000),
        cors_allowed_origins=origins,
        demo_page=_flag(env, "DEMO_PAGE", not running_on_gcp),
        stream_bench_inject=_flag(env, "STREAM_BENCH_INJECT", False),
        stream_stats_interval=_number(env, "STREAM_STATS_INTERVAL", 60.0, minimum=0.05, maximum=3600),
        log_level=level,
        running_on_gcp=running_on_gcp,
    )


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read on first use and kept."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    global _settings
    _settings = None
