"""Structured logging in Cloud Logging's JSON format, with tokens redacted.

One JSON object per line on stderr, with ``severity`` and ``message``; the trace
of the request being served, when there is one, under Cloud Logging's key so the
log lines group under the request. Anything that looks like a credential is
replaced before the line is written, whichever logger produced it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)

_REDACTIONS = (
    # A JWT anywhere: three base64url segments, the first a JSON header.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), "[REDACTED]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[REDACTED]"),
    # Query credentials: ?token= (and access_token=), and single-use stream tickets (?ticket=).
    (re.compile(r"(?i)((?:^|[?&\s\"'])(?:(?:access_)?token|ticket)=)[^&\s\"']+"), r"\1[REDACTED]"),
)

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with every token-like substring replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


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
