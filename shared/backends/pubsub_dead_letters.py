"""The dead-letter sink on Pub/Sub: every refused event is kept, also one Pub/Sub would not take as is.

SPEC section 2 republishes a refused event unchanged with an ``error``
attribute. Unchanged is not always possible: the event came through Pub/Sub
within its limits, and the attributes ingest adds can push its copy over them
(a message of nearly 10 MB plus ``error``; 100 attributes, Pub/Sub's maximum,
plus ``error``). Such a dead letter is fitted rather than lost or retried:

- attributes over Pub/Sub's count: ``error`` and ``original_message_id`` stay,
  then ``user_id``, ``event_id``, ``audience``, then the others in key order;
  those that do not fit are dropped;
- a body that does not fit beside its attributes: its first bytes are kept;
- the ``trimmed`` attribute says what was cut (with the size and SHA-256 of the
  whole body), and an ERROR log line carries it with the dropped attributes.

If Pub/Sub still refuses the message as too large or invalid, a stub is
published instead (the reason, the ids, the first 64 KiB of the body), and
logged. A topic that is missing or not writable is BackendMisconfigured; an
unreachable one BackendUnavailable (``shared.backends.google_errors``).

The Pub/Sub emulator enforces the request size but not the attribute limits;
the real service enforces both, so they are applied here on every backend.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError
from google.pubsub_v1 import types as gapic_types

from shared.backends.google_errors import TRANSIENT_ERRORS, backend_error
from shared.channel import DeadLetterSink

logger = logging.getLogger(__name__)

# Pub/Sub's quotas and limits page: per message, and per publish request.
MAX_ATTRIBUTES = 100
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1024
MAX_REQUEST_BYTES = 10_000_000  # what the client library checks before sending, too
STUB_BODY_BYTES = 64 * 1024
TRIMMED = "trimmed"
# Kept first when attributes must go: what ingest adds, then what identifies the event.
_PRIORITY = ("error", "original_message_id", "user_id", "event_id", "audience")
# Room for the protobuf framing of the data field and the message around it.
_FRAMING = 32


@dataclass(frozen=True)
class FittedDeadLetter:
    data: bytes
    attributes: dict[str, str]
    notes: list[str] = field(default_factory=list)  # what was cut, in words
    dropped: dict[str, str] = field(default_factory=dict)  # attributes that did not fit

    @property
    def trimmed(self) -> bool:
        return bool(self.notes)


def request_bytes(topic_path: str, data: bytes, attributes: Mapping[str, str]) -> int:
    """The size of the publish request that carries one such message (what Pub/Sub limits)."""
    message = gapic_types.PubsubMessage(data=data, attributes=dict(attributes))
    return int(gapic_types.PublishRequest(topic=topic_path, messages=[message])._pb.ByteSize())


def _cut_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "..."


def _describe(data: bytes) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def fit_dead_letter(
    data: bytes, attributes: Mapping[str, str], topic_path: str, *, max_request_bytes: int = MAX_REQUEST_BYTES
) -> FittedDeadLetter:
    """``data`` and ``attributes`` cut down to what Pub/Sub accepts, saying what was cut."""
    notes: list[str] = []
    dropped: dict[str, str] = {}
    usable: dict[str, str] = {}
    for key, value in attributes.items():
        if key == TRIMMED:
            continue  # ours to write; an event's own ``trimmed`` is replaced
        if not key or len(key.encode("utf-8", "replace")) > MAX_KEY_BYTES or key.startswith("goog"):
            dropped[key] = value
            continue
        if len(value.encode("utf-8", "replace")) > MAX_VALUE_BYTES:
            notes.append(f"attribute {key[:40]} cut to {MAX_VALUE_BYTES} bytes")
            value = _cut_utf8(value, MAX_VALUE_BYTES)
        usable[key] = value
    order = sorted(usable, key=lambda k: (_PRIORITY.index(k) if k in _PRIORITY else len(_PRIORITY), k))
    room = MAX_ATTRIBUTES if len(order) <= MAX_ATTRIBUTES and not dropped and not notes else MAX_ATTRIBUTES - 1
    kept = {k: usable[k] for k in order[:room]}
    dropped.update({k: usable[k] for k in order[room:]})
    if dropped:
        notes.append(f"attributes: dropped {len(dropped)} of {len(attributes)}: {', '.join(sorted(dropped))}")
    if not notes and request_bytes(topic_path, data, kept) <= max_request_bytes:
        return FittedDeadLetter(data, kept)
    # Measured with the longest ``trimmed`` there could be, so adding it never breaks the fit.
    overhead = request_bytes(topic_path, b"", {**kept, TRIMMED: "x" * MAX_VALUE_BYTES}) + _FRAMING
    if overhead + len(data) > max_request_bytes:
        keep = max(0, max_request_bytes - overhead)
        # First: ``trimmed`` holds at most 1 KiB, and a cut body matters more than any attribute.
        notes.insert(0, f"body: kept the first {keep} of {_describe(data)}")
        data = data[:keep]
    if notes:
        kept[TRIMMED] = _cut_utf8("; ".join(notes), MAX_VALUE_BYTES)
    return FittedDeadLetter(data, kept, notes, dropped)


def stub_dead_letter(data: bytes, attributes: Mapping[str, str], refusal: str) -> FittedDeadLetter:
    """What is left to publish when Pub/Sub refused the fitted dead letter itself."""
    kept = {k: _cut_utf8(v, MAX_VALUE_BYTES) for k, v in attributes.items() if k in _PRIORITY}
    note = f"Pub/Sub refused the dead letter ({_cut_utf8(refusal, 300)}); body: the first {STUB_BODY_BYTES} of "
    kept[TRIMMED] = _cut_utf8(note + _describe(data), MAX_VALUE_BYTES)
    dropped = {k: v for k, v in attributes.items() if k not in kept}
    return FittedDeadLetter(data[:STUB_BODY_BYTES], kept, [kept[TRIMMED]], dropped)


class PubSubDeadLetters(DeadLetterSink):
    def __init__(self, project_id: str, topic: str, *, timeout: float = 10.0) -> None:
        self.topic_path = f"projects/{project_id}/topics/{topic}"
        self._timeout = timeout
        self._lock = threading.Lock()
        self._publisher: pubsub_v1.PublisherClient | None = None

    def _client(self) -> pubsub_v1.PublisherClient:
        with self._lock:
            if self._publisher is None:
                self._publisher = pubsub_v1.PublisherClient()
            return self._publisher

    def send(self, data: bytes, attributes: Mapping[str, str]) -> None:
        fitted = fit_dead_letter(data, attributes, self.topic_path)
        if fitted.trimmed:
            _log_cut("dead letter trimmed to fit Pub/Sub's limits", data, attributes, fitted)
        try:
            self._publish(fitted)
        except (MessageTooLargeError, gexc.InvalidArgument) as refused:
            stub = stub_dead_letter(data, attributes, f"{type(refused).__name__}: {refused}")
            _log_cut("dead letter refused by Pub/Sub; published a stub instead", data, attributes, stub)
            self._publish(stub)

    def _publish(self, letter: FittedDeadLetter) -> None:
        try:
            future = self._client().publish(self.topic_path, letter.data, timeout=self._timeout, **letter.attributes)
            future.result(timeout=self._timeout)
        except (MessageTooLargeError, gexc.InvalidArgument):
            raise
        except TRANSIENT_ERRORS as exc:
            raise backend_error(exc, "dead-letter publish", "Pub/Sub") from exc

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()


def _log_cut(what: str, data: bytes, attributes: Mapping[str, str], letter: FittedDeadLetter) -> None:
    logger.error(
        what,
        extra={
            "original_message_id": attributes.get("original_message_id"),
            "reason": attributes.get("error"),
            "trimmed": letter.notes,
            "dropped_attributes": letter.dropped,
            "body_bytes": len(data),
            "body_sha256": hashlib.sha256(data).hexdigest(),
        },
    )
