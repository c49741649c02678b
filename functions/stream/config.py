"""The stream service's settings: the common ones, token verification, and its own SSE_* knobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import Settings, common_fields, flag, integer, loaded_once, number, optional, running_on_gcp
from shared.errors import ConfigError
from shared.tokens import TokenSettings, token_fields


@dataclass(frozen=True)
class StreamSettings(Settings, TokenSettings):
    sse_heartbeat_interval: float = 30.0
    sse_max_connections_per_user: int = 3
    sse_max_backlog_messages: int = 100
    sse_max_stream_seconds: float = 3300.0
    sse_retry_ms: int = 3000
    sse_send_queue_size: int = 256
    cors_allowed_origins: tuple[str, ...] = ()
    demo_page: bool = False
    stream_stats_interval: float = 60.0
    stream_ticket_ttl_seconds: float = 30.0
    # Signs stream tickets; None: a key derived from JWT_SECRET (see functions/stream/tickets.py).
    stream_ticket_secret: str | None = None
    http_body_timeout_seconds: float = 10.0
    # Per user and instance (functions/stream/ratelimit.py says what N instances allow).
    rate_limit_history_per_minute: int = 120
    rate_limit_changes_per_minute: int = 60
    rate_limit_tickets_per_minute: int = 30
    rate_limit_connects_per_minute: int = 30
    history_max_ids_per_request: int = 100


def load_stream_settings(env: Mapping[str, str] | None = None) -> StreamSettings:
    """Read every setting of the stream service from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    origins = tuple(o.strip() for o in env.get("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip())
    return StreamSettings(
        **common_fields(env),
        **token_fields(env),
        sse_heartbeat_interval=number(env, "SSE_HEARTBEAT_INTERVAL", 30.0, minimum=0.05, maximum=3600),
        sse_max_connections_per_user=integer(env, "SSE_MAX_CONNECTIONS_PER_USER", 3, minimum=1, maximum=1000),
        sse_max_backlog_messages=integer(env, "SSE_MAX_BACKLOG_MESSAGES", 100, minimum=1, maximum=1000),
        sse_max_stream_seconds=number(env, "SSE_MAX_STREAM_SECONDS", 3300.0, minimum=1, maximum=86400),
        sse_retry_ms=integer(env, "SSE_RETRY_MS", 3000, minimum=0, maximum=600_000),
        sse_send_queue_size=integer(env, "SSE_SEND_QUEUE_SIZE", 256, minimum=1, maximum=100_000),
        cors_allowed_origins=origins,
        demo_page=flag(env, "DEMO_PAGE", not running_on_gcp(env)),
        stream_stats_interval=number(env, "STREAM_STATS_INTERVAL", 60.0, minimum=0.05, maximum=3600),
        stream_ticket_ttl_seconds=number(env, "STREAM_TICKET_TTL_SECONDS", 30.0, minimum=1, maximum=60),
        stream_ticket_secret=_ticket_secret(env),
        http_body_timeout_seconds=number(env, "HTTP_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=300),
        rate_limit_history_per_minute=_per_minute(env, "RATE_LIMIT_HISTORY_PER_MINUTE", 120),
        rate_limit_changes_per_minute=_per_minute(env, "RATE_LIMIT_CHANGES_PER_MINUTE", 60),
        rate_limit_tickets_per_minute=_per_minute(env, "RATE_LIMIT_TICKETS_PER_MINUTE", 30),
        rate_limit_connects_per_minute=_per_minute(env, "RATE_LIMIT_CONNECTS_PER_MINUTE", 30),
        history_max_ids_per_request=integer(env, "HISTORY_MAX_IDS_PER_REQUEST", 100, minimum=1, maximum=500),
    )


def _ticket_secret(env: Mapping[str, str]) -> str | None:
    secret = optional(env, "STREAM_TICKET_SECRET")
    if secret is not None and len(secret) < 32:
        raise ConfigError("STREAM_TICKET_SECRET must be at least 32 characters long")
    if secret is None and optional(env, "JWT_PUBLIC_KEY") is not None:
        # A public key cannot sign, and every instance must check every other's tickets.
        raise ConfigError("STREAM_TICKET_SECRET must be set when JWT_PUBLIC_KEY is used (it signs stream tickets)")
    return secret


def _per_minute(env: Mapping[str, str], name: str, default: int) -> int:
    return integer(env, name, default, minimum=1, maximum=1_000_000)


def get_stream_settings() -> StreamSettings:
    """The process's stream settings, read on first use and kept."""
    return loaded_once(load_stream_settings)
