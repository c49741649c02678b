"""The periodic "stream stats" log line that the log-based metrics in ops/metrics/ read."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from functions.stream.config import load_stream_settings
from functions.stream.metrics import LatencyWindow
from functions.stream.service import StreamService
from shared.backends import Backends
from shared.backends.memory import MemoryChannel, MemoryDeadLetters, MemoryStore
from shared.channel import ChannelMessage

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_latency_window_reports_p95_then_starts_afresh() -> None:
    window = LatencyWindow(size=1000)
    for value in range(100):
        window.add(value / 1000)
    assert window.take_p95() == pytest.approx(0.095)
    assert window.take_p95() is None


def test_latency_window_is_bounded() -> None:
    window = LatencyWindow(size=10)
    for value in range(1000):
        window.add(float(value))
    assert window.take_p95() == 999.0
    assert len(window._samples) == 0


async def test_the_service_logs_stream_stats_periodically(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_stream_settings(
        {"NOTIFICATIONS_BACKEND": "memory", "STREAM_STATS_INTERVAL": "0.1", "NOTIFICATIONS_LOCAL_MODE": "true"}
    )
    channel = MemoryChannel()
    service = StreamService(settings, Backends(MemoryStore(), channel, MemoryDeadLetters()))
    caplog.set_level(logging.INFO, logger="functions.stream.service")
    await service.start()
    try:
        channel.publish(ChannelMessage("u1", "notification", {"id": "0" * 24}, sent_at=time.time() - 0.25))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = [r for r in caplog.records if r.getMessage() == "stream stats"]
            if any(getattr(r, "fanout_latency_p95_seconds", None) for r in stats):
                break
            await asyncio.sleep(0.05)
        record = next(r for r in stats if getattr(r, "fanout_latency_p95_seconds", None))
        assert record.streams_open == 0  # type: ignore[attr-defined]
        assert 0.25 <= record.fanout_latency_p95_seconds < 5  # type: ignore[attr-defined]
        json.dumps({"streams_open": record.streams_open})  # type: ignore[attr-defined]
    finally:
        await service.stop()
