"""The bench's CPU window closes at the last delivery, not at the end of the wait for missing ones."""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import drain


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


def test_a_delivery_that_never_comes_does_not_bill_the_wait() -> None:
    async def main() -> None:
        deliveries = _Deliveries()
        feeding = asyncio.ensure_future(_deliver(deliveries, 5))
        drained = await drain(deliveries.delivered, 6, deliveries.cpu, timeout=10, quiet=0.3, poll=0.005)
        await feeding
        assert not drained.complete
        assert drained.delivered == 5
        # Read when the fifth delivery was seen: the quiet 0.3 s spent waiting for the sixth is not in it.
        assert time.monotonic() - drained.cpu[0] >= 0.3
        assert abs(drained.cpu[0] - drained.at) < 0.05

    asyncio.run(main())


def test_every_delivery_ends_the_wait_at_once() -> None:
    async def main() -> None:
        deliveries = _Deliveries()
        feeding = asyncio.ensure_future(_deliver(deliveries, 4))
        drained = await drain(deliveries.delivered, 4, deliveries.cpu, timeout=10, quiet=5, poll=0.005)
        await feeding
        assert drained.complete
        assert drained.delivered == 4

    asyncio.run(main())


def test_nothing_delivered_ends_after_the_quiet_time() -> None:
    async def main() -> None:
        deliveries = _Deliveries()
        drained = await drain(deliveries.delivered, 3, deliveries.cpu, timeout=10, quiet=0.1, poll=0.005)
        assert (drained.complete, drained.delivered) == (False, 0)
        assert time.monotonic() - drained.cpu[0] >= 0.1

    asyncio.run(main())
