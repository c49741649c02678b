import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logs import StormWarning, configure_logging, redact, reset_trace, set_trace
from tests.support.fuzzing import examples

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


def _encode(text: str, positions: set[int]) -> str:
    return "".join(f"%{ord(c):02X}" if i in positions else c for i, c in enumerate(text))


@pytest.mark.parametrize(
    "text",
    [
        f"GET /stream?%74oken={TOKEN} HTTP/1.1",  # the reported bypass
        "GET /stream?%74oken=opaque-not-a-jwt-value HTTP/1.1",
        "GET /stream?t%6Fk%65n=opaque-not-a-jwt-value HTTP/1.1",
        "GET /stream?%61ccess_token=opaque-not-a-jwt-value",
        f"GET /stream?token={TOKEN.replace('.', '%2E')} HTTP/1.1",  # dots encoded
        f"GET /stream?x=1&token=%65{TOKEN[1:]}",  # first letter encoded
        f"GET /stream?x=1&token=%2565{TOKEN[1:].replace('.', '%252E')}",  # twice encoded
        f"GET /notifications/{TOKEN.replace('.', '%2e')} HTTP/1.1",  # lower-case escapes, in a path
        "GET /stream?ticket=opaque-not-a-jwt-value HTTP/1.1",  # stream tickets
        "GET /stream?last_event_id=1&%74icket=opaque-not-a-jwt-value",
        "GET /stream?id_token=opaque-not-a-jwt-value",
    ],
)
def test_tokens_are_redacted_after_percent_decoding(text: str) -> None:
    cleaned = redact(text)
    for seen in (cleaned, unquote(cleaned), unquote(unquote(cleaned))):
        assert "opaque-not-a-jwt-value" not in seen
        assert TOKEN.rsplit(".", 1)[1] not in seen, "the signature"
        assert TOKEN.split(".")[1] not in seen, "the payload"


def test_a_harmless_escape_is_left_as_it_came() -> None:
    assert redact("GET /notifications?limit=20&q=100%25%20done") == "GET /notifications?limit=20&q=100%25%20done"


@settings(max_examples=examples(400), deadline=None)
@given(
    name=st.sampled_from(["token", "access_token", "ticket"]),
    value=st.sampled_from([TOKEN, "opaque-not-a-jwt-value"]),
    prefix=st.sampled_from(["GET /api/v1/notifications/stream?", "GET /stream?limit=5&", "POST /mark-read?x=%20&"]),
    data=st.data(),
)
def test_any_percent_encoding_of_a_credential_in_a_query_is_redacted(
    name: str, value: str, prefix: str, data: st.DataObject
) -> None:
    """Whatever characters of ``name=value`` are percent-encoded, Starlette reads the credential; the log must not."""
    pair = f"{name}={value}"
    positions = data.draw(st.sets(st.integers(0, len(pair) - 1)))
    positions.discard(len(name))  # an encoded "=" is no longer a parameter for Starlette either
    line = f"{prefix}{_encode(pair, positions)} HTTP/1.1"
    assert parse_qs(urlsplit(line.split()[1]).query).get(name) == [value], "Starlette would read it"
    cleaned = redact(line)
    for seen in (cleaned, unquote(cleaned)):
        assert value.rsplit(".", 1)[-1] not in seen


def test_a_storm_of_one_warning_is_one_line_per_interval(captured: io.StringIO) -> None:
    storm = StormWarning(logging.getLogger("t.storm"), "release slow", interval=10.0)
    logged = [storm.warn(now) for now in (100.0, 100.5, 101.0, 109.9, 110.0, 112.0, 125.0)]
    assert logged == [True, False, False, False, True, False, True]
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if "release slow" in line]
    # Each line stands for itself and those held back since the previous one.
    assert [line["occurrences"] for line in lines] == [1, 4, 2]
    assert {line["severity"] for line in lines} == {"WARNING"}
