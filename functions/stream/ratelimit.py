"""Per-user rate limits of the stream service: history reads, changes, stream tickets, stream connects.

One user with one valid token made 18 mark-read calls a second of 500 ids
each, about 9,350 Firestore reads a second. Each user now has a token bucket
per kind of request:

| kind | requests | setting (per minute) | default |
|---|---|---|---|
| ``history`` | ``GET /api/v1/notifications`` | ``RATE_LIMIT_HISTORY_PER_MINUTE`` | 120 |
| ``changes`` | mark-read, mark-unread, ``DELETE`` one or all | ``RATE_LIMIT_CHANGES_PER_MINUTE`` | 60 |
| ``tickets`` | ``POST .../stream-ticket`` | ``RATE_LIMIT_TICKETS_PER_MINUTE`` | 30 |
| ``connects`` | ``GET .../stream`` | ``RATE_LIMIT_CONNECTS_PER_MINUTE`` | 30 |

A bucket refills at the per-minute rate and holds ten seconds' worth (at
least 1), so a burst is allowed (a page load, tabs reconnecting after a
deploy) but not a minute's worth at once. A request over the limit is
answered 429 with ``Retry-After`` (whole seconds until the next one is
allowed) and the JSON error ``rate_limited``, before it costs a backend call;
``sse_rate_limited_total{kind}`` counts them. The other bound is per request:
at most ``HISTORY_MAX_IDS_PER_REQUEST`` (default 100) ids per mark call.

Per process, on purpose (no shared store on the hot path): the buckets live
in each instance's memory, so a user whose requests Cloud Run spreads over N
instances gets up to N times these rates (with ``--max-instances`` M, at most
M times). With the defaults a mark call reads at most 100 documents, so one
user costs at most about 100 reads a second per instance in changes (a
burst of 10 calls, 1,000 reads, at once) instead of 9,350.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

from functions.stream import metrics
from functions.stream.http import ApiError

if TYPE_CHECKING:
    from functions.stream.config import StreamSettings
    from functions.stream.service import StreamService

Kind = Literal["history", "changes", "tickets", "connects"]
BURST_SECONDS = 10.0
# Buckets of users not seen for a while are dropped first; a dropped bucket only
# means a full one next time, so the bound costs a little leniency, never a refusal.
MAX_BUCKETS = 100_000
_WHAT = {
    "history": "history reads",
    "changes": "changes (mark-read, mark-unread, delete)",
    "tickets": "stream tickets",
    "connects": "stream connections",
}


class RateLimiter:
    """Token buckets keyed by (kind, user); used on the event loop's thread only, so it takes no lock."""

    def __init__(
        self,
        per_minute: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.per_minute = dict(per_minute)
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def capacity(self, kind: str) -> float:
        return max(1.0, self.per_minute[kind] * BURST_SECONDS / 60.0)

    def wait(self, kind: str, user_id: str) -> float:
        """Take one request from the user's bucket: 0 if allowed, else seconds until one would be."""
        rate = self.per_minute[kind] / 60.0
        capacity = self.capacity(kind)
        now = self._clock()
        key = (kind, user_id)
        tokens, updated = self._buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            waited = 0.0
        else:
            self._buckets[key] = (tokens, now)
            waited = (1.0 - tokens) / rate
        while len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)  # the least recently used
        return waited


def limiter_for(settings: StreamSettings) -> RateLimiter:
    return RateLimiter(
        {
            "history": settings.rate_limit_history_per_minute,
            "changes": settings.rate_limit_changes_per_minute,
            "tickets": settings.rate_limit_tickets_per_minute,
            "connects": settings.rate_limit_connects_per_minute,
        }
    )


# One limiter per running service (per lifespan), without a field on the service itself.
_limiters: weakref.WeakKeyDictionary[StreamService, RateLimiter] = weakref.WeakKeyDictionary()


def enforce(service: StreamService, kind: Kind, user_id: str) -> None:
    """Count one request of ``kind`` for ``user_id``; ApiError 429 with Retry-After when over the limit."""
    limiter = _limiters.get(service)
    if limiter is None:
        limiter = _limiters[service] = limiter_for(service.settings)
    waited = limiter.wait(kind, user_id)
    if waited <= 0:
        return
    metrics.RATE_LIMITED.labels(kind).inc()
    raise ApiError(
        429,
        "rate_limited",
        f"too many {_WHAT[kind]}: at most {limiter.per_minute[kind]} a minute per user",
        {"Retry-After": str(max(1, math.ceil(waited)))},
    )
