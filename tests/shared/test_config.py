import pytest

from functions.stream.config import load_stream_settings
from shared.config import load_settings
from shared.errors import ConfigError
from shared.tokens import DEV_JWT_SECRET

LOCAL = {"NOTIFICATIONS_LOCAL_MODE": "true"}


def test_defaults_work_for_a_local_run() -> None:
    settings = load_stream_settings(LOCAL)
    assert settings.content_events_topic == "content-generation-events"
    assert settings.dead_letter_topic == "content-generation-events-dead-letter"
    assert settings.notifications_topic == "user-notifications"
    assert settings.sse_max_connections_per_user == 3
    assert settings.sse_max_backlog_messages == 100
    assert settings.sse_heartbeat_interval == 30
    assert settings.notification_retention_days == 30
    assert settings.demo_page is True
    assert settings.uses_dev_secret


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.project_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SSE_MAX_CONNECTIONS_PER_USER": "three"}, "SSE_MAX_CONNECTIONS_PER_USER"),
        ({"SSE_MAX_CONNECTIONS_PER_USER": "0"}, "SSE_MAX_CONNECTIONS_PER_USER"),
        ({"SSE_HEARTBEAT_INTERVAL": "-1"}, "SSE_HEARTBEAT_INTERVAL"),
        ({"SSE_HEARTBEAT_INTERVAL": "soon"}, "SSE_HEARTBEAT_INTERVAL"),
        ({"NOTIFICATION_RETENTION_DAYS": "1.5"}, "NOTIFICATION_RETENTION_DAYS"),
        ({"DEMO_PAGE": "maybe"}, "DEMO_PAGE"),
        ({"NOTIFICATIONS_BACKEND": "redis"}, "NOTIFICATIONS_BACKEND"),
        ({"NOTIFICATIONS_TOPIC": "projects/p/topics/t"}, "NOTIFICATIONS_TOPIC"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_PUBLIC_KEY": "not a pem"}, "JWT_PUBLIC_KEY"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"NOTIFICATIONS_LOCAL_MODE": "perhaps"}, "NOTIFICATIONS_LOCAL_MODE"),
    ],
)
def test_wrong_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_stream_settings({**LOCAL, **env})


@pytest.mark.parametrize(
    "env",
    [
        {},  # a VM, GKE, plain Docker: nothing says "production", nothing says "local" either
        {"K_SERVICE": "stream"},
        {"K_SERVICE": "stream", "JWT_SECRET_REQUIRED": "false"},  # the switch of old is gone: no way around
        {"FUNCTION_TARGET": "ingest_content_event", "K_REVISION": "r1"},
        {"JWT_SECRET": "   "},  # whitespace is no secret
        {"K_SERVICE": "stream", "JWT_SECRET": " \t "},
        {"JWT_SECRET": "", "JWT_PUBLIC_KEY": "  "},
        {"NOTIFICATIONS_LOCAL_MODE": "false"},
    ],
)
def test_the_stream_service_refuses_to_start_without_a_key_outside_local_mode(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_stream_settings(env)


def test_only_local_mode_may_use_the_development_secret() -> None:
    assert load_stream_settings(LOCAL).jwt_secret == DEV_JWT_SECRET
    settings = load_stream_settings({"K_SERVICE": "stream", "JWT_SECRET": "a-real-secret-of-enough-length-0123456789"})
    assert settings.demo_page is False
    assert settings.jwt_secret != DEV_JWT_SECRET
    assert not settings.uses_dev_secret


def test_values_are_parsed() -> None:
    settings = load_stream_settings(
        {
            **LOCAL,
            "SSE_HEARTBEAT_INTERVAL": "0.5",
            "CORS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "DEMO_PAGE": "off",
            "NOTIFICATIONS_BACKEND": "memory",
        }
    )
    assert settings.sse_heartbeat_interval == 0.5
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")
    assert settings.demo_page is False
    assert settings.backend == "memory"
