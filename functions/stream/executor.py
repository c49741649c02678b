"""The thread pool of the stream service's blocking backend calls, on daemon threads.

Store and registry calls block, so they run in threads. With a standard
ThreadPoolExecutor a call stuck in a Google client (a backend that is gone,
retried for a minute) holds the process at exit twice: ``asyncio.run`` waits for
its default executor, and the interpreter joins every ThreadPoolExecutor worker.
A stream process must stop within Cloud Run's 10 s whatever its backends do, so
these workers are daemon threads and ``shutdown`` never waits for them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor (asyncio accepts nothing else as its default) whose workers are daemon threads.

    Only ``submit`` and ``shutdown`` are used by asyncio; both are replaced, so
    none of the base class's (non-daemon, joined at exit) workers is ever started.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "io") -> None:
        super().__init__(max_workers, thread_name_prefix)
        self._max_workers = max_workers
        self._daemon_prefix = thread_name_prefix
        self._daemon_work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._daemon_idle = threading.Semaphore(0)
        self._daemon_lock = threading.Lock()
        self._daemon_count = 0
        self._stopped = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._daemon_lock:
            if self._stopped:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._daemon_work.put((future, fn, args, kwargs))
            if not self._daemon_idle.acquire(blocking=False) and self._daemon_count < self._max_workers:
                self._daemon_count += 1
                name = f"{self._daemon_prefix}-{self._daemon_count}"
                threading.Thread(target=self._worker, name=name, daemon=True).start()
        return future

    def _worker(self) -> None:
        while True:
            item = self._daemon_work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            self._daemon_idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; never waits for a running call (see the module's docstring)."""
        with self._daemon_lock:
            self._stopped = True
            threads = self._daemon_count
        if cancel_futures:
            while True:
                try:
                    item = self._daemon_work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in range(threads):
            self._daemon_work.put(None)
