"""One root exception, so callers can catch everything this package raises."""


class NotificationError(Exception):
    """Root of every error raised by this package."""


class ConfigError(NotificationError):
    """An environment variable has a value the system cannot run with."""


class InvalidEventError(NotificationError):
    """A content event breaks the contract; retrying will never fix it."""


class BackendUnavailable(NotificationError):
    """Firestore or Pub/Sub could not be reached; the operation may succeed later."""


class AuthError(NotificationError):
    """A request's credentials were missing, malformed or refused."""

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
