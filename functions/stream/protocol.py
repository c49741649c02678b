"""uvicorn's httptools protocol with a bound on the size of a request's head.

httptools has no limit of its own: a client could send one header of hundreds of
megabytes and the process would buffer all of it before the app ever sees the
request (73 -> 315 MiB for a 200 MiB header, measured once by hand against plain
httptools; no command in the repository repeats it). This subclass answers 431
with the service's JSON error when a request line and headers pass
``MAX_REQUEST_HEAD_BYTES``, counted two ways: the bytes the parser hands over
(URL and headers), and the bytes received while the head is still incomplete
(what httptools buffers inside one header before any callback). The second check
runs after the parser took each chunk, so a body that arrives in the same chunk as
the end of the headers never counts against the head.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_REQUEST_HEAD_BYTES = 64 * 1024

_BODY = json.dumps(
    {
        "error": {
            "code": "request_header_too_large",
            "message": f"the request line and headers must be at most {MAX_REQUEST_HEAD_BYTES} bytes",
        }
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into HttpParserError."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True
        self._received = 0  # bytes received while the head is incomplete
        self._parsed = 0  # bytes of request line and headers the parser handed over
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        if self._head_pending:
            self._received += len(data)
        super().data_received(data)
        # One header can be buffered inside httptools before any callback sees it.
        if self._head_pending and self._received > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
            self._too_large = True
            self.send_400_response("")

    def on_message_begin(self) -> None:
        self._parsed = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._parsed += size
        if self._parsed > MAX_REQUEST_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._received = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True  # the next request on this keep-alive connection

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error here; a head over the bound gets its own answer.
        if not self._too_large:
            super().send_400_response(msg)
            return
        self.logger.warning("request head over %d bytes refused", MAX_REQUEST_HEAD_BYTES)
        self.transport.write(_RESPONSE)
        self.transport.close()
