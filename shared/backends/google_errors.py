"""Client errors of Google Cloud turned into BackendUnavailable, naming the step that failed.

One place for what counts as "the backend is unavailable", used by the store,
the connection registry and the cleanup function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as gexc

from shared.errors import BackendUnavailable

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (gexc.GoogleAPIError, TimeoutError, ConnectionError)


@contextmanager
def unavailable_on_error(what: str, service: str = "backend") -> Iterator[None]:
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise BackendUnavailable(f"{service} unavailable during {what}: {exc!r}") from exc
