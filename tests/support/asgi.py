"""The stream service's ASGI app run in process: its lifespan, and a client that calls it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that calls it in process (no streaming bodies)."""
    # The service's start-up collects the heap, then freezes it (tune_gc): in its own process, that is its
    # modules; here it is the whole test run's, 0.2 s a lifespan late in a run. What the test process held
    # before is frozen first, out of that collection; the service's shutdown (or this) unfreezes it.
    gc.freeze()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
                yield client
    finally:
        gc.unfreeze()
