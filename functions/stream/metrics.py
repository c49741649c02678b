"""Prometheus metrics of the stream service (process-wide, served at /metrics)."""

from __future__ import annotations

from collections import deque

from prometheus_client import Counter, Gauge, Histogram

STREAMS_OPEN = Gauge("sse_streams_open", "SSE streams currently open in this process")
RATE_LIMITED = Counter("sse_rate_limited_total", "Requests answered 429 by the per-user rate limits, by kind", ["kind"])
CONNECTS_REJECTED = Counter("sse_connects_rejected_total", "Stream connections refused, by reason", ["reason"])
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
FANOUT_LATENCY = Histogram(
    "sse_fanout_latency_seconds",
    "Time from channel publish (ChannelMessage.sent_at) to dispatch onto the streams",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


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
        samples, self._samples = sorted(self._samples), deque(maxlen=self._samples.maxlen)
        if not samples:
            return None
        return samples[min(len(samples) - 1, int(len(samples) * 0.95))]


FANOUT_WINDOW = LatencyWindow()
