"""One change of a user's feed at a time within a process.

Firestore locks documents pessimistically: fifty transactions of one process on
one user's document wait on each other's locks, time out, retry in place, and
form a convoy that can outlast the deliveries themselves (observed on the
emulator: fifty simultaneous deliveries of one event left the user's feed
answering "Transaction lock timeout" for more than a minute). Queueing them in
the process first costs a thread wait instead, and once the first has committed
the rest find the event already stored on their plain read.

Locks are striped by a hash of the user id, so their number is bounded whatever
the number of users; two users that share a stripe wait on each other in this
process only, which at a few hundred stripes is rare and brief.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from shared.errors import BackendUnavailable

STRIPES = 256


class UserLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    @contextmanager
    def turn(self, user_id: str, timeout: float) -> Iterator[None]:
        """Wait up to ``timeout`` s for the user's turn; past that, the caller retries later (raise to retry)."""
        lock = self._locks[zlib.crc32(user_id.encode()) % len(self._locks)]
        if not lock.acquire(timeout=timeout):
            raise BackendUnavailable(f"Firestore busy: another change of this user's feed took over {timeout:g} s")
        try:
            yield
        finally:
            lock.release()
