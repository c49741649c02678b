"""Each component reads only its own settings: the functions that never verify tokens need no JWT secret."""

from __future__ import annotations

import pytest

from functions.stream.config import load_stream_settings
from shared.config import load_settings
from shared.errors import ConfigError


@pytest.mark.parametrize("service", ["notifications-ingest", "notifications-cleanup"])
def test_functions_without_tokens_start_without_the_secret(service: str) -> None:
    settings = load_settings({"K_SERVICE": service})
    assert settings.running_on_gcp is True
    assert not hasattr(settings, "jwt_secret")


def test_the_stream_service_fails_fast_naming_the_secret() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_stream_settings({"K_SERVICE": "notifications-stream"})
