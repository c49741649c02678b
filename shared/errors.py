"""One root exception, so callers can catch everything this package raises."""


class NotificationError(Exception):
    """Root of every error raised by this package."""


class ConfigError(NotificationError):
    """An environment variable has a value the system cannot run with."""


class InvalidEventError(NotificationError):
    """A content event breaks the contract; retrying will never fix it."""


class BackendUnavailable(NotificationError):
    """Firestore or Pub/Sub could not be reached; the operation may succeed later."""


class BackendMisconfigured(BackendUnavailable):
    """Firestore or Pub/Sub refused for a reason only a change to the deployment fixes.

    A missing topic, subscription, database or index, or a missing IAM binding:
    waiting does not help, so what decides about retries or answers clients
    checks for it first (ingest dead-letters instead of having Pub/Sub
    redeliver; the stream service answers 500 ``backend_misconfigured``, not
    503). It is a BackendUnavailable so that code that only knows outages
    (background heartbeats, re-subscription) keeps retrying and recovers by
    itself once someone fixes the deployment.
    """


class AuthError(NotificationError):
    """A request's credentials were missing, malformed or refused."""

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
