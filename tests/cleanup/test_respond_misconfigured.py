"""The cleanup function's answer when a backend is misconfigured: 500 with the reason, not a 503 to retry."""

from __future__ import annotations

from typing import Any

import pytest

from functions.cleanup import run
from shared.config import load_settings
from shared.errors import BackendMisconfigured, BackendUnavailable

SETTINGS = load_settings({"NOTIFICATIONS_BACKEND": "memory"})


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BackendMisconfigured("Pub/Sub misconfigured: PermissionDenied: ..."), 500, "backend_misconfigured"),
        (BackendUnavailable("Firestore unavailable during expiry: ServiceUnavailable"), 503, "backend_unavailable"),
    ],
    ids=["misconfigured", "unavailable"],
)
def test_cleanup_tells_a_misconfiguration_from_an_outage(
    monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, code: str
) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(run, "get_clients", lambda settings: (None, None))
    monkeypatch.setattr(run, "run_cleanup", failing)
    answered, body = run.respond("5", SETTINGS)
    assert (answered, body["error"]["code"]) == (status, code)
    if status == 500:
        assert "PermissionDenied" in body["error"]["message"]
