"""What a Google client error means: an outage to wait out, or a deployment to fix (logged at ERROR)."""
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import logging

import pytest
from google.api_core import exceptions as gexc

from shared.backends.google_errors import MISCONFIGURED_KIND, backend_error, unavailable_on_error
from shared.errors import BackendMisconfigured, BackendUnavailable, NotificationError


@pytest.mark.parametrize(
    "error",
    [
        gexc.PermissionDenied("User not authorized to perform this action."),
        gexc.PermissionDenied("Missing or insufficient permissions."),
        gexc.Unauthenticated("Request had invalid authentication credentials."),
        gexc.NotFound("Resource not found (resource=user-notifications)."),
        gexc.NotFound("Topic not found"),
        gexc.NotFound("The database (default) does not exist for project p"),
        gexc.FailedPrecondition("The query requires an index. You can create it here: ..."),
    ],
    ids=lambda e: f"{type(e).__name__}-{str(e)[:24]}",
)
def test_what_only_the_deployment_can_fix_is_misconfigured_and_logged(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BackendMisconfigured) as raised, unavailable_on_error("persist", "Firestore"):
        raise error
    assert isinstance(raised.value, NotificationError)
    [record] = [r for r in caplog.records if r.__dict__.get("error_kind") == MISCONFIGURED_KIND]
    assert record.levelno == logging.ERROR
    assert record.__dict__["service"] == "Firestore" and record.__dict__["step"] == "persist"
    assert str(error.message if isinstance(error, gexc.GoogleAPICallError) else error)[:20] in record.getMessage()


@pytest.mark.parametrize(
    "error",
    [
        gexc.ServiceUnavailable("connection refused"),
        gexc.DeadlineExceeded("timed out"),
        gexc.InternalServerError("oops"),
        gexc.Aborted("contention"),
        gexc.NotFound('No document to update: projects/p/databases/(default)/documents/users/u/notifications/x'),
        gexc.NotFound("no entity to update: app: dev~p"),
        gexc.FailedPrecondition("the transaction has expired"),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: f"{type(e).__name__}-{str(e)[:20]}",
)
def test_what_may_work_again_by_itself_is_unavailable_and_not_logged_as_misconfigured(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    translated = backend_error(error, "page", "Firestore")
    assert type(translated) is BackendUnavailable
    assert not [r for r in caplog.records if r.__dict__.get("error_kind") == MISCONFIGURED_KIND]
