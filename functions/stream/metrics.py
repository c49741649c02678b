"""Prometheus metrics of the stream service (process-wide, served at /metrics)."""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from shared.channel import ChannelMessage

# The delivery SLO: a notification reaches its open streams within this many seconds of
# the worker's publish (docs/operations.md, Service level objectives).
DELIVERY_OBJECTIVE_SECONDS = 2.0

STREAMS_OPEN = Gauge("sse_streams_open", "SSE streams currently open in this process")
RATE_LIMITED = Counter("sse_rate_limited_total", "Requests answered 429 by the per-user rate limits, by kind", ["kind"])
CONNECTS_REJECTED = Counter("sse_connects_rejected_total", "Stream connections refused, by reason", ["reason"])
STREAM_TICKETS = Counter("sse_stream_tickets_total", "Stream tickets issued and redeemed", ["result"])
STREAMS_CLOSED = Counter("sse_streams_closed_total", "Streams ended, by reason", ["reason"])
NOTIFICATIONS_DELIVERED = Counter(
    "sse_notifications_delivered_total", "Live notifications queued to streams (after de-duplication)"
)
NOTIFICATIONS_REPLAYED = Counter("sse_notifications_replayed_total", "Notifications replayed from the store")
CHANGES_DELIVERED = Counter("sse_changes_delivered_total", "notification.updated/deleted events queued to streams")
DUPLICATES_DROPPED = Counter("sse_duplicates_dropped_total", "Notifications dropped as already sent on a stream")
SLOW_CONSUMERS = Counter("sse_slow_consumer_total", "Streams cut off because the client did not read")
CHANNEL_MESSAGES = Counter("sse_channel_messages_total", "Channel messages received by this process")
GAP_REPLAYS = Counter("sse_gap_replays_total", "Times the channel reported a gap and open streams replayed")
SKIP_REPLAYS = Counter(
    "sse_skipped_change_replays_total",
    "Times a stream got a change numbered past the next one (out of order, or one lost) and replayed from the store",
)
FANOUT_LATENCY = Histogram(
    "sse_fanout_latency_seconds",
    "Time from channel publish (ChannelMessage.sent_at) to dispatch onto the streams",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

DELIVERY_DELAY = Histogram(
    "sse_delivery_delay_seconds",
    "Time from the worker's publish (ChannelMessage.published_at) to dispatch onto open streams",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, DELIVERY_OBJECTIVE_SECONDS, 5.0, 10.0, 30.0, 60.0),
)
QUANTILES = (0.5, 0.95, 0.99)


class LatencyWindow:
    """Fan-out latencies since the last report, for the periodic "stream stats" log line.

    Log-based metrics in Cloud Monitoring read that line (ops/metrics/), since
    /metrics is not scraped on Cloud Run. Bounded: the newest ``size`` samples.
    Used on the event loop's thread only, so it takes no lock on the hot path.
    """

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def take_p95(self) -> float | None:
        """The 95th percentile of the samples since the last call (None: none), and start afresh."""
        return self.take_quantiles((0.95,))[0]

    def take_quantiles(self, quantiles: tuple[float, ...] = QUANTILES) -> list[float | None]:
        """The quantiles of the samples since the last call (None each: no samples), and start afresh."""
        samples, self._samples = sorted(self._samples), deque(maxlen=self._samples.maxlen)
        if not samples:
            return [None for _ in quantiles]
        return [samples[min(len(samples) - 1, int(len(samples) * q))] for q in quantiles]

    def take_fields(self, name: str) -> dict[str, float | None]:
        """``{name}_p50_seconds``, ``_p95_`` and ``_p99_`` for the "stream stats" line."""
        values = self.take_quantiles(QUANTILES)
        return {f"{name}_p{round(q * 100)}_seconds": value for q, value in zip(QUANTILES, values, strict=True)}


class DeliveryWindow:
    """Notifications dispatched onto open streams since the last report, and how late they were.

    The delay runs from the worker's publish of the content event (Pub/Sub
    publishTime, carried as ``ChannelMessage.published_at``) to the dispatch onto
    this instance's streams of that user; messages without it (changes, or from
    an older ingest) are not counted. On the event loop's thread only.
    """

    def __init__(self, objective_seconds: float = DELIVERY_OBJECTIVE_SECONDS, size: int = 4096) -> None:
        self.objective_seconds = objective_seconds
        self._delays = LatencyWindow(size)
        self._total = 0
        self._late = 0

    def observe(self, message: ChannelMessage, now: float) -> None:
        if message.type != "notification" or message.published_at is None:
            return
        delay = max(0.0, now - message.published_at)
        self._total += 1
        if delay > self.objective_seconds:
            self._late += 1
        self._delays.add(delay)
        DELIVERY_DELAY.observe(delay)

    def take_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"deliveries": self._total, "deliveries_late": self._late}
        self._total = self._late = 0
        return fields | self._delays.take_fields("delivery_delay")


class OpenedWindow:
    """Streams opened since the last report, without a hook on the connect path.

    Opened = closed meanwhile (``sse_streams_closed_total``) + the change in open
    streams. A connect refused before its stream was served counts neither way.
    """

    def __init__(self) -> None:
        self._closed = self._closed_total()
        self._open = 0

    @staticmethod
    def _closed_total() -> float:
        return sum(s.value for m in STREAMS_CLOSED.collect() for s in m.samples if s.name.endswith("_total"))

    def take(self, open_now: int) -> int:
        closed = self._closed_total()
        opened = int(closed - self._closed) + open_now - self._open
        self._closed, self._open = closed, open_now
        return max(0, opened)


FANOUT_WINDOW = LatencyWindow()
DELIVERIES = DeliveryWindow()
OPENED = OpenedWindow()


def interval_stats(open_now: int) -> dict[str, Any]:
    """The "stream stats" fields that cover the time since the previous line (ops/metrics/ reads them)."""
    return {
        "streams_opened": OPENED.take(open_now),
        **FANOUT_WINDOW.take_fields("fanout_latency"),
        **DELIVERIES.take_fields(),
    }
