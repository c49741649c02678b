"""The kill switch: an operator turns notifications off, and on again, without a redeploy.

One document, ``config/notifications`` in Firestore (``ops/killswitch.py`` flips it)::

    {"ingest_enabled": false, "streams_enabled": true, "reason": "bad worker release",
     "updated_at": <timestamp>, "updated_by": "alice"}

- ``ingest_enabled: false``: the ingest function stores and publishes nothing; it
  parks every event on the dead-letter topic (acknowledged, kept there for replay).
- ``streams_enabled: false``: the stream service refuses new streams with a 503.

A missing document or field means enabled. Each process reads the document at
most once per ``KILLSWITCH_CACHE_SECONDS`` and only when asked, so an idle
instance costs nothing and a flip takes effect everywhere within that time. A
failed read keeps the last value read (enabled before any): a Firestore outage
neither flips the switch nor adds a wait to every request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import BackendUnavailable

logger = logging.getLogger(__name__)

CONFIG_COLLECTION = "config"
CONFIG_DOCUMENT = "notifications"
SWITCHES = ("ingest", "streams")
_OFF_WORDS = frozenset({"false", "off", "no", "0", "disabled"})


def _enabled(value: Any) -> bool:
    # Only an explicit "off" disables: a typo in the document must not stop the system.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() not in _OFF_WORDS
    return True


@dataclass(frozen=True)
class Switches:
    ingest_enabled: bool = True
    streams_enabled: bool = True
    reason: str = ""

    @classmethod
    def from_document(cls, data: Mapping[str, Any] | None) -> Switches:
        if not data:
            return cls()
        reason = data.get("reason")
        return cls(
            ingest_enabled=_enabled(data.get("ingest_enabled", True)),
            streams_enabled=_enabled(data.get("streams_enabled", True)),
            reason=reason[:500] if isinstance(reason, str) else "",
        )

    def describe(self) -> str:
        off = [name for name in SWITCHES if not getattr(self, f"{name}_enabled")]
        state = f"off: {', '.join(off)}" if off else "on"
        return f"{state} ({self.reason})" if self.reason and off else state


class SwitchDocument(ABC):
    """Where the switches are stored."""

    @abstractmethod
    def read(self) -> Mapping[str, Any] | None:
        """The document's fields, None when it does not exist; BackendUnavailable when unreadable."""

    @abstractmethod
    def write(self, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` into the document (created when missing)."""


class MemorySwitchDocument(SwitchDocument):
    """One process's switches (local runs on the embedded backends, fast tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fields: dict[str, Any] | None = None

    def read(self) -> Mapping[str, Any] | None:
        with self._lock:
            return None if self._fields is None else dict(self._fields)

    def write(self, fields: Mapping[str, Any]) -> None:
        with self._lock:
            self._fields = {**(self._fields or {}), **fields}


class KillSwitch:
    """The switches as this process sees them: the document, read at most once per ``ttl`` seconds."""

    def __init__(self, document: SwitchDocument, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.document = document
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value = Switches()
        self._read_at: float | None = None

    def fresh(self) -> Switches | None:
        """The switches if read less than ``ttl`` ago, else None; never blocks."""
        read_at = self._read_at
        if read_at is not None and self._clock() - read_at < self._ttl:
            return self._value
        return None

    def current(self) -> Switches:
        """The switches, reading the document when the cached value is stale (blocking, bounded)."""
        cached = self.fresh()
        if cached is not None:
            return cached
        # One reader at a time; callers that arrive meanwhile use the last value
        # instead of queueing behind a slow read.
        if not self._lock.acquire(blocking=False):
            return self._value
        try:
            if self.fresh() is None:
                self._refresh()
            return self._value
        finally:
            self._lock.release()

    async def current_async(self) -> Switches:
        """``current`` for the event loop: the document is read in a thread when stale."""
        cached = self.fresh()
        return cached if cached is not None else await asyncio.to_thread(self.current)

    def _refresh(self) -> None:
        try:
            value = Switches.from_document(self.document.read())
        except BackendUnavailable as exc:
            logger.warning("kill switch unreadable; keeping the last value", extra={"error": str(exc)[:300]})
        else:
            if value != self._value:
                logger.warning("kill switch changed", extra={"switches": value.describe()})
            self._value = value
        # A failed read also waits for the next period: an outage must not turn every call into a read.
        self._read_at = self._clock()
