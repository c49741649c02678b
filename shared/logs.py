"""Structured logging in Cloud Logging's JSON format, with tokens redacted.

One JSON object per line on stderr, with ``severity`` and ``message``; the trace
of the request being served, when there is one, under Cloud Logging's key so the
log lines group under the request. Anything that looks like a credential is
replaced before the line is written, whichever logger produced it, and also
when it is percent-encoded (``?%74oken=``, a JWT with ``%2E`` for its dots):
what the server decodes is what is redacted.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)

_REDACTIONS = (
    # A JWT anywhere: three base64url segments, the first a JSON header.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), "[REDACTED]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[REDACTED]"),
    # Credentials in a query: ?token=, ?access_token=, ?id_token=..., and stream tickets (?ticket=).
    (re.compile(r"(?i)((?:^|[?&;\s\"'])[a-z_]*(?:token|ticket)=)[^&\s\"']+"), r"\1[REDACTED]"),
)
# A run of text with a percent-escape in it: Starlette decodes ?%74oken=, %65yJ... and
# %2E before it reads a query, so such a run is redacted as it reads after decoding.
_ENCODED_RUN = re.compile(r"[^\s\"'<>]*%[0-9A-Fa-f]{2}[^\s\"'<>]*")
_DECODE_ROUNDS = 3  # double and triple encoding too: redacting more than Starlette reads costs nothing

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with every token-like substring replaced, also where it is percent-encoded."""
    text = _redact_plain(text)
    if "%" in text:
        text = _ENCODED_RUN.sub(_redact_encoded_run, text)
    return text


def _redact_plain(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_encoded_run(match: re.Match[str]) -> str:
    run = match.group(0)
    decoded = run
    for _ in range(_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    redacted = _redact_plain(decoded)
    # Logged decoded only when something had to go: a harmless run stays as it came.
    return run if redacted == decoded else redacted


def set_trace(trace_header: str | None, project_id: str) -> contextvars.Token[str | None]:
    """Bind the trace of ``X-Cloud-Trace-Context`` to the current context."""
    trace = None
    if trace_header:
        trace_id = trace_header.split("/", 1)[0].strip()
        if re.fullmatch(r"[0-9a-fA-F]{1,32}", trace_id):
            trace = f"projects/{project_id}/traces/{trace_id}"
    return _TRACE.set(trace)


def reset_trace(token: contextvars.Token[str | None]) -> None:
    _TRACE.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    """Formats a record as one line of Cloud Logging JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _severity(record.levelno),
            "message": redact(record.getMessage()),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        if record.exc_info:
            entry["stack_trace"] = redact(self.formatException(record.exc_info))
        trace = _TRACE.get()
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def _severity(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route every logger of the process through one JSON handler on stderr.

    Access loggers of the servers (uvicorn, gunicorn, werkzeug) are included, so
    a token in a query string is redacted there too.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(CloudLoggingFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing.formatter, CloudLoggingFormatter):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access", "werkzeug"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # The Google client libraries are chatty at INFO about retries we already log.
    logging.getLogger("google").setLevel(max(logging.WARNING, root.level))


class StormWarning:
    """A warning that can come thousands of times at once: at most one line per ``interval`` seconds.

    The first occurrence is logged at once; later ones within the interval are
    counted, and the next line logged says how many it stands for
    (``occurrences``). A disconnect storm otherwise wrote one line per stream,
    which costs CPU on the instance and money in Cloud Logging.
    """

    def __init__(self, logger: logging.Logger, message: str, interval: float = 10.0) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._count = 0
        self._logged_at: float | None = None

    def warn(self, now: float, **extra: Any) -> bool:
        """Count one occurrence at ``now`` (``time.monotonic()``); True when a line was logged."""
        self._count += 1
        if self._logged_at is not None and now - self._logged_at < self._interval:
            return False
        self._logger.warning(self._message, extra={**extra, "occurrences": self._count})
        self._count = 0
        self._logged_at = now
        return True
