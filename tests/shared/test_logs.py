import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.logs import configure_logging, redact, reset_trace, set_trace

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXZhbHVl"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)


def test_lines_are_cloud_logging_json(captured: io.StringIO) -> None:
    logging.getLogger("t").warning("hello %s", "world", extra={"user_id": "u1"})
    entry = json.loads(captured.getvalue().splitlines()[-1])
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "hello world"
    assert entry["user_id"] == "u1"


def test_trace_is_attached_when_the_request_has_one(captured: io.StringIO) -> None:
    token = set_trace("0123456789abcdef0123456789abcdef/1;o=1", "proj")
    try:
        logging.getLogger("t").info("traced")
    finally:
        reset_trace(token)
    entry = json.loads(captured.getvalue().splitlines()[-1])
    assert entry["logging.googleapis.com/trace"] == "projects/proj/traces/0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /api/v1/notifications/stream?token={TOKEN} HTTP/1.1",
        f"GET /stream?last_event_id=1&token={TOKEN}",
        f"Authorization: Bearer {TOKEN}",
        f"token {TOKEN} in the middle",
        "GET /stream?token=opaque-not-a-jwt-value&x=1",
    ],
)
def test_tokens_are_redacted(text: str) -> None:
    cleaned = redact(text)
    assert TOKEN not in cleaned
    assert "opaque-not-a-jwt-value" not in cleaned


def test_tokens_in_arguments_and_extras_are_redacted(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.access").info('%s - "GET %s"', "127.0.0.1", f"/s?token={TOKEN}", extra={"t": TOKEN})
    assert TOKEN not in captured.getvalue()
    assert "[REDACTED]" in captured.getvalue()
