"""Functions that never verify tokens run on Google Cloud without the JWT secret."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_settings


def test_functions_without_tokens_start_without_the_secret() -> None:
    settings = load_settings({"K_SERVICE": "notifications-cleanup", "JWT_SECRET_REQUIRED": "false"})
    assert settings.running_on_gcp is True


def test_the_secret_is_still_required_by_default_and_the_flag_is_checked() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_settings({"K_SERVICE": "notifications-stream"})
    with pytest.raises(ConfigError, match="JWT_SECRET_REQUIRED"):
        load_settings({"K_SERVICE": "notifications-stream", "JWT_SECRET_REQUIRED": "maybe"})
