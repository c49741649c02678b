"""Redeemed stream tickets in one process (embedded local runs, fast tests)."""

from __future__ import annotations

import heapq
import threading
import time

from shared.redeemed_tickets import RedeemedTickets


class MemoryRedeemedTickets(RedeemedTickets):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        # Oldest expiry first, so forgetting expired ids costs nothing per call when none expired.
        self._queue: list[tuple[float, str]] = []

    def redeem(self, ticket_id: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                _, old = heapq.heappop(self._queue)
                self._expiry.pop(old, None)
            if ticket_id in self._expiry:
                return False
            self._expiry[ticket_id] = expires_at
            heapq.heappush(self._queue, (expires_at, ticket_id))
            return True
