"""Configuration, read once from the environment into a frozen, typed object.

Every variable has a default that works for a local run; a value that cannot be
parsed fails at start with a message that names the variable. This module holds
what every component reads and the parsers; a component with settings of its
own (the stream service) extends ``Settings`` in its folder, so each component
fails fast on what it needs and on nothing else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from shared.errors import ConfigError

Backend = Literal["gcp", "memory"]


@dataclass(frozen=True)
class Settings:
    """What every component reads; each component's own settings extend this."""

    project_id: str = "notifications-local"
    backend: Backend = "gcp"
    content_events_topic: str = "content-generation-events"
    dead_letter_topic: str = "content-generation-events-dead-letter"
    notifications_topic: str = "user-notifications"
    notification_retention_days: int = 30
    event_max_age_seconds: int = 3600
    backend_timeout_seconds: float = 10.0
    sse_connection_timeout: float = 300.0
    # How long a process trusts its last read of the kill switch (shared/killswitch.py).
    killswitch_cache_seconds: float = 5.0
    log_level: str = "INFO"
    running_on_gcp: bool = False
    # NOTIFICATIONS_LOCAL_MODE: a development run (make run, the tests), the
    # only mode in which the public development JWT secret may be used.
    local_mode: bool = False


def text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
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


def integer(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
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


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _topic(env: Mapping[str, str], name: str, default: str) -> str:
    value = text(env, name, default)
    if "/" in value or len(value) < 3 or len(value) > 255:
        raise ConfigError(f"{name} must be a bare topic id (3-255 characters, no '/'), got {value!r}")
    return value


def running_on_gcp(env: Mapping[str, str]) -> bool:
    return bool(env.get("K_SERVICE") or (env.get("FUNCTION_TARGET") and env.get("K_REVISION")))


def common_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """The common settings as keyword arguments, for a component's own loader."""
    level = choice(env, "LOG_LEVEL", "INFO", ("debug", "info", "warning", "error")).upper()
    return {
        "project_id": text(env, "GOOGLE_CLOUD_PROJECT", "notifications-local"),
        "backend": "memory" if choice(env, "NOTIFICATIONS_BACKEND", "gcp", ("gcp", "memory")) == "memory" else "gcp",
        "content_events_topic": _topic(env, "CONTENT_EVENTS_TOPIC", "content-generation-events"),
        "dead_letter_topic": _topic(env, "CONTENT_EVENTS_DEAD_LETTER_TOPIC", "content-generation-events-dead-letter"),
        "notifications_topic": _topic(env, "NOTIFICATIONS_TOPIC", "user-notifications"),
        "notification_retention_days": integer(env, "NOTIFICATION_RETENTION_DAYS", 30, minimum=1, maximum=3650),
        "event_max_age_seconds": integer(env, "EVENT_MAX_AGE_SECONDS", 3600, minimum=1, maximum=7 * 86400),
        "backend_timeout_seconds": number(env, "BACKEND_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=300),
        "sse_connection_timeout": number(env, "SSE_CONNECTION_TIMEOUT", 300.0, minimum=1, maximum=86400),
        "killswitch_cache_seconds": number(env, "KILLSWITCH_CACHE_SECONDS", 5.0, minimum=0.1, maximum=300),
        "log_level": level,
        "running_on_gcp": running_on_gcp(env),
        "local_mode": flag(env, "NOTIFICATIONS_LOCAL_MODE", False),
    }


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the common settings from ``env`` (default: the process environment)."""
    return Settings(**common_fields(os.environ if env is None else env))


_T = TypeVar("_T")
_loaded: dict[Callable[[], Any], Any] = {}
_loaded_lock = threading.Lock()


def loaded_once(loader: Callable[[], _T]) -> _T:
    """``loader()``'s settings, read on first use and kept for the process (each component's own)."""
    with _loaded_lock:
        if loader not in _loaded:
            _loaded[loader] = loader()
        return cast(_T, _loaded[loader])


def get_settings() -> Settings:
    """The process's common settings, read on first use and kept."""
    return loaded_once(load_settings)


def reset_settings() -> None:
    """Forget every component's cached settings (tests change the environment between cases)."""
    with _loaded_lock:
        _loaded.clear()
