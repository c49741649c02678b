"""The bench's CPU window closes at the last delivery, not at the end of the wait for missing ones."""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import Drained, drain


class _Deliveries:
    """A delivery counter, and a CPU clock that runs with the wall clock, as idle streams' CPU does."""

    def __init__(self) -> None:
        self.count = 0

    def delivered(self) -> int:
        return self.count

    def cpu(self) -> list[float]:
        return [time.monotonic()]


async def _deliver(deliveries: _Deliveries, how_many: int) -> None:
    for _ in range(how_many):
        deliveries.count += 1
        await asyncio.sleep(0.01)


def _drain_while(sent: int, expected: int, quiet: float) -> Drained:
    """What ``drain`` returns while ``sent`` deliveries arrive 10 ms apart, of ``expected``."""

    async def main() -> Drained:
        deliveries = _Deliveries()
        feeding = asyncio.ensure_future(_deliver(deliveries, sent))
        drained = await drain(deliveries.delivered, expected, deliveries.cpu, timeout=10, quiet=quiet, poll=0.005)
        await feeding
        return drained

    return asyncio.run(main())


def test_a_delivery_that_never_comes_does_not_bill_the_wait() -> None:
    drained = _drain_while(sent=5, expected=6, quiet=0.3)
    assert not drained.complete
    assert drained.delivered == 5
    # Read when the fifth delivery was seen: the quiet 0.3 s spent waiting for the sixth is not in it.
    assert time.monotonic() - drained.cpu[0] >= 0.3
    assert abs(drained.cpu[0] - drained.at) < 0.05


def test_every_delivery_ends_the_wait_at_once() -> None:
    drained = _drain_while(sent=4, expected=4, quiet=5)
    assert drained.complete
    assert drained.delivered == 4


def test_nothing_delivered_ends_after_the_quiet_time() -> None:
    drained = _drain_while(sent=0, expected=3, quiet=0.1)
    assert (drained.complete, drained.delivered) == (False, 0)
    assert time.monotonic() - drained.cpu[0] >= 0.1
