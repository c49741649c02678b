"""The delivery SLO's measurement: worker publish -> open stream, counted in the "stream stats" line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from functions.stream import metrics
from functions.stream.metrics import DeliveryWindow, OpenedWindow
from shared.channel import ChannelMessage
from tests.support.emulators import EmulatorPair
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for
from tests.support.waiting import wait_for

STREAM = "/api/v1/notifications/stream"


def test_the_window_counts_notifications_with_a_publish_time_and_the_late_ones() -> None:
    window = DeliveryWindow(objective_seconds=2.0)
    now = 1_000_000.0
    for delay in (0.1, 0.5, 1.9, 2.5, 7.0):
        window.observe(ChannelMessage("u", "notification", {}, published_at=now - delay), now)
    window.observe(ChannelMessage("u", "notification", {}), now)  # no publish time: not counted
    window.observe(ChannelMessage("u", "notification.updated", {"ids": []}, published_at=now - 9), now)
    window.observe(ChannelMessage("u", "notification", {}, published_at=now + 3), now)  # clock skew: 0 s

    fields = window.take_fields()
    assert fields["deliveries"] == 6 and fields["deliveries_late"] == 2
    assert fields["delivery_delay_p50_seconds"] == pytest.approx(1.9)
    assert fields["delivery_delay_p99_seconds"] == pytest.approx(7.0)
    assert window.take_fields() == {
        "deliveries": 0,
        "deliveries_late": 0,
        "delivery_delay_p50_seconds": None,
        "delivery_delay_p95_seconds": None,
        "delivery_delay_p99_seconds": None,
    }


def test_streams_opened_are_derived_from_closes_and_the_open_count() -> None:
    window = OpenedWindow()
    assert window.take(open_now=3) == 3
    metrics.STREAMS_CLOSED.labels("test_reason").inc(2)
    assert window.take(open_now=4) == 3, "2 closed and the open count grew by 1: 3 opened"
    assert window.take(open_now=4) == 0


def _stats_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == "stream stats":
            lines.append(record)
    return lines


def test_a_published_event_is_measured_from_the_workers_publish_to_the_stream(
    emulators: EmulatorPair, publish: Callable[..., str], new_user: Callable[[], str]
) -> None:
    server = start_stream_service({**emulators.env(), "STREAM_STATS_INTERVAL": "0.5"})
    try:
        user = new_user()
        with EventStream(server.url + STREAM, token=token_for(user)) as stream:
            stream.wait_event("connection.established")
            before = time.time()
            publish(user, title="measured")
            stream.wait_event("notification", timeout=30)
            elapsed = time.time() - before

            def measured() -> dict[str, Any] | None:
                found = [r for r in _stats_lines(server.log()) if r.get("deliveries")]
                return found[0] if found else None

            record = wait_for(measured, 10, what='a "stream stats" line counting the delivery')
            assert record is not None
        assert record["deliveries"] == 1 and 0 <= record["deliveries_late"] <= 1
        assert record["deliveries_late"] == (record["delivery_delay_p99_seconds"] > 2.0)
        # The delay runs from the worker's publish (before the call returned) to the dispatch
        # (before the client read it): within what the test itself saw.
        assert 0 < record["delivery_delay_p50_seconds"] <= elapsed + 0.05
        assert sum(r["streams_opened"] for r in _stats_lines(server.log())) == 1, "one stream, counted once"
        assert record["fanout_latency_p50_seconds"] is not None
    finally:
        server.stop()
