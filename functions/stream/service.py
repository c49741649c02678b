"""What one stream-service process holds: backends, registry, hub, channel subscription.

``start`` runs in the ASGI lifespan: it subscribes the instance to the channel
(retrying in the background while Pub/Sub is unreachable), announces the
instance in the registry, and starts the heartbeat loop. ``stop`` announces
``shutdown`` on every stream, waits briefly for them to end, closes the
subscription (which deletes it) and removes the instance record.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from functions.stream import metrics
from functions.stream.config import StreamSettings
from functions.stream.executor import DaemonThreadExecutor
from functions.stream.hub import Hub
from functions.stream.session import StreamSession
from shared.backends import Backends
from shared.channel import Subscription
from shared.errors import BackendUnavailable
from shared.ids import new_instance_id
from shared.logs import StormWarning
from shared.registry import ConnectionRegistry

logger = logging.getLogger(__name__)

_SUBSCRIBE_RETRY = (1.0, 2.0, 5.0, 10.0)
HEALTH_CACHE_SECONDS = 5.0
# Cloud Run allows 10 s between SIGTERM and SIGKILL: the streams get up to
# SHUTDOWN_DRAIN_SECONDS to end, the backend clean-up what is left of the budget.
SHUTDOWN_DRAIN_SECONDS = 2.0
SHUTDOWN_BUDGET_SECONDS = 5.0
# Store and registry calls are blocking and run in threads; asyncio's default
# pool (cores + 4) would serialise a reconnect storm of thousands of streams.
IO_THREADS = 64
# Heartbeats go out in up to this many slices per interval, ticks at least this far apart.
HEARTBEAT_SLICES = 30
MIN_HEARTBEAT_TICK = 0.1
GC_THRESHOLD_0 = 10_000


def tune_gc() -> tuple[int, int, int]:
    """Keep full garbage collections short and rare with thousands of streams.

    What exists after start-up (modules, clients: most of the heap) lives as
    long as the process, so it is frozen out of every later collection; and a
    higher first threshold makes young collections, and so the promotions that
    lead to full ones, less frequent.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_0, previous[1], previous[2])
    return previous


def untune_gc(previous: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*previous)


async def _bounded(what: str, call: Callable[[], object], deadline: float) -> None:
    """Run a blocking backend call on a daemon thread; give up on it at ``deadline``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        error: BaseException | None = None
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported on the loop below
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(_settle, done, error)

    threading.Thread(target=run, name=f"shutdown-{what[:20]}", daemon=True).start()
    try:
        await asyncio.wait_for(done, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        logger.warning(f"{what} did not finish within the shutdown budget; left to the cleanup function")
    except BackendUnavailable as exc:
        logger.warning(f"{what} failed; left to the cleanup function", extra={"error": str(exc)[:300]})
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever a backend says
        logger.warning(f"{what} failed; left to the cleanup function", extra={"error": repr(exc)[:300]})


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


@dataclass
class Health:
    status: str
    checks: dict[str, str]
    checked_at: float


class StreamService:
    def __init__(
        self, settings: StreamSettings, backends: Backends, registry: ConnectionRegistry | None = None
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.instance_id = registry.instance_id if registry is not None else new_instance_id()
        self.registry = registry or backends.registry(
            self.instance_id, settings.sse_max_connections_per_user, settings.sse_heartbeat_interval
        )
        self.hub: Hub | None = None
        self.subscription: Subscription | None = None
        self.registered = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health: Health | None = None
        self._health_lock: asyncio.Lock | None = None
        self._stopped = False
        self._previous_handlers: dict[int, Any] = {}
        self._gc_threshold: tuple[int, int, int] | None = None
        self._user_locks: dict[str, list[Any]] = {}
        self._slow_releases = StormWarning(logger, "releasing connection records is slow; continuing without waiting")
        # Set at SIGTERM (or the lifespan's end): pending connects give up at once.
        self.stopping = asyncio.Event()

    # Lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(DaemonThreadExecutor(IO_THREADS, thread_name_prefix="stream-io"))
        interval = self.settings.sse_heartbeat_interval
        slices = max(1, min(HEARTBEAT_SLICES, int(interval / MIN_HEARTBEAT_TICK)))
        self.hub = Hub(self.backends.store, self.settings.sse_max_backlog_messages, loop, slices)
        self._health_lock = asyncio.Lock()
        try:
            await asyncio.to_thread(self._subscribe)
        except Exception as exc:  # noqa: BLE001 - retried in the background below
            logger.error("channel subscription failed at start; retrying", extra={"error": repr(exc)})
            self._spawn(self._subscribe_until_done())
        await self._register()
        self._spawn(self._instance_heartbeats())
        self._spawn(self._stream_heartbeats())
        self._spawn(self._report_stats())
        self._install_signal_handlers(loop)
        self._gc_threshold = tune_gc()
        logger.info(
            "stream service started",
            extra={"instance_id": self.instance_id, "backend": self.settings.backend},
        )

    def _subscribe(self) -> None:
        hub = self.hub
        assert hub is not None
        self.subscription = self.backends.channel.subscribe(self.instance_id, hub.receive, hub.gap, loop=hub.loop)

    async def _subscribe_until_done(self) -> None:
        attempt = 0
        while not self._stopped:
            await asyncio.sleep(_SUBSCRIBE_RETRY[min(attempt, len(_SUBSCRIBE_RETRY) - 1)])
            attempt += 1
            try:
                await asyncio.to_thread(self._subscribe)
            except Exception as exc:  # noqa: BLE001 - keep trying until stopped
                logger.warning("channel subscription still failing", extra={"error": repr(exc)})
                continue
            logger.info("channel subscription established late; replaying open streams")
            if self.hub is not None:
                self.hub.replay_all()
            return

    async def _register(self) -> None:
        try:
            await asyncio.to_thread(self.registry.start, self.backends.channel.subscription_name(self.instance_id))
            self.registered = True
        except BackendUnavailable as exc:
            logger.warning("instance registration failed; retrying", extra={"error": str(exc)})

    async def _instance_heartbeats(self) -> None:
        """One registry write per heartbeat interval for the whole instance."""
        while not self._stopped:
            await asyncio.sleep(self.settings.sse_heartbeat_interval)
            if not self.registered:
                await self._register()
                continue
            try:
                await asyncio.to_thread(self.registry.heartbeat)
            except BackendUnavailable as exc:
                logger.warning("instance heartbeat failed", extra={"error": str(exc)})

    async def _stream_heartbeats(self) -> None:
        """Tick ``slices`` times per interval on a fixed schedule (no drift)."""
        hub = self.hub
        assert hub is not None
        loop = asyncio.get_running_loop()
        period = self.settings.sse_heartbeat_interval / hub.heartbeat_slices
        next_tick = loop.time() + period
        while not self._stopped:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick = max(next_tick + period, loop.time())
            hub.heartbeat()

    def stats(self) -> dict[str, Any]:
        """What the periodic "stream stats" log line carries (read by log-based metrics)."""
        return {
            "streams_open": self.hub.count if self.hub is not None else 0,
            **metrics.interval_stats(self.hub.count if self.hub is not None else 0),
            "instance_id": self.instance_id,
        }

    async def _report_stats(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.settings.stream_stats_interval)
            logger.info("stream stats", extra=self.stats())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Announce shutdown to the streams on SIGTERM/SIGINT, then let the server stop.

        The server (uvicorn) waits for open responses before running the
        lifespan shutdown, so streams must be told to end as soon as the signal
        arrives, not in the lifespan.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            self._previous_handlers[sig] = previous

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.begin_shutdown)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def begin_shutdown(self) -> None:
        self.stopping.set()
        if self.hub is not None:
            self.hub.shutdown()

    async def stop(self) -> None:
        """Stop within SHUTDOWN_BUDGET_SECONDS whatever the backends do (up, slow or gone).

        The streams were told at the signal; what is left costs no work per stream:
        deleting the instance record is the one fact that makes all of this
        instance's connections stop counting. Every backend call gets what is
        left of the budget and runs on a daemon thread, so a call stuck in a
        client cannot hold the process.
        """
        self.begin_shutdown()
        deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
        drained = min(deadline, time.monotonic() + SHUTDOWN_DRAIN_SECONDS)
        while self.hub is not None and self.hub.count and time.monotonic() < drained:
            await asyncio.sleep(0.05)
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        subscription, self.subscription = self.subscription, None
        # The subscription and the instance record go concurrently: both are best effort
        # (orphans expire by themselves and the cleanup function removes them).
        steps = [_bounded("instance record removal", self.registry.stop, deadline)]
        if subscription is not None:
            steps.append(_bounded("channel subscription removal", lambda: subscription.close(deadline), deadline))
        await asyncio.gather(*steps)
        if self._gc_threshold is not None:
            untune_gc(self._gc_threshold)
            self._gc_threshold = None
        for sig, previous in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, previous)
        logger.info("stream service stopped", extra={"instance_id": self.instance_id})

    @asynccontextmanager
    async def user_lock(self, user_id: str) -> AsyncIterator[None]:
        """Serialises registry transactions of one user within this process."""
        entry = self._user_locks.get(user_id)
        if entry is None:
            entry = self._user_locks[user_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._user_locks[user_id]

    async def forget(self, session: StreamSession) -> None:
        """A stream ended: stop routing to it and release its registry entry (once)."""
        session.close(None)
        if session.forgotten:
            return
        session.forgotten = True
        if self.hub is not None:
            self.hub.remove(session)
        if self.hub is not None and self.hub.shutting_down:
            # The instance record is deleted at shutdown, which releases every
            # entry at once; one transaction per stream would not fit in 10 s.
            return

        async def release() -> None:
            async with self.user_lock(session.user_id):
                await asyncio.to_thread(self.registry.release, session.user_id, session.connection_id)

        try:
            # Bounded: a stream's end never waits long for Firestore; a release
            # that completes later still frees the slot.
            task = asyncio.ensure_future(release())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a late failure is not an error
            await asyncio.wait_for(asyncio.shield(task), self.settings.backend_timeout_seconds)
        except TimeoutError:
            self._slow_releases.warn(time.monotonic())
        except BackendUnavailable as exc:
            # The entry stops counting when this instance goes; cleanup removes it.
            logger.warning("could not release a connection record", extra={"error": str(exc)})

    # Health ----------------------------------------------------------------------------
    async def health(self) -> Health:
        assert self._health_lock is not None
        async with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached.checked_at < HEALTH_CACHE_SECONDS:
                return cached
            checks = await asyncio.to_thread(self._check)
            if checks["store"] != "ok":
                status = "unavailable"
            elif any(value != "ok" for value in checks.values()):
                status = "degraded"
            else:
                status = "healthy"
            self._health = Health(status, checks, time.monotonic())
            return self._health

    def _check(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        for name, ping in (("store", self.backends.store.ping), ("channel", self.backends.channel.ping)):
            try:
                ping()
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure makes the check fail
                checks[name] = f"error: {type(exc).__name__}"
        subscription = self.subscription
        checks["subscription"] = "ok" if subscription is not None and subscription.healthy() else "down"
        checks["registry"] = "ok" if self.registered else "not registered"
        return checks
