"""Group calls from many threads into one RPC: what arrives while one is in flight goes out in the next.

A connect makes the same two small RPCs for every user (a commit of its
registry entry, a read of its feed head). Under load many threads make them at
once, and each RPC costs the client about a millisecond of CPU and the server a
request of its own. ``GroupCall`` lets the first caller run the call for
everyone waiting, and the callers that arrive meanwhile wait for the next one:
with no concurrency a call goes out alone and at once; the busier it gets, the
larger the groups. No timer, no thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Firestore takes at most 500 writes in one commit; reads are kept to the same.
MAX_GROUP = 500


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "key", "result")

    def __init__(self, item: T, key: Hashable) -> None:
        self.item = item
        self.key = key
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


def _itself(item: Any) -> Hashable:
    return item  # type: ignore[no-any-return]


class GroupCall(Generic[T, R]):
    """``call(items) -> results`` (one result per item, in order), shared by the callers of ``submit``.

    Items with the same ``key`` (by default, equal items) never share a call
    (a commit may not write one document twice); the later waits for the next call. An exception from
    ``call`` is raised to every caller whose item was in it.
    """

    def __init__(
        self,
        call: Callable[[list[T]], Sequence[R]],
        key: Callable[[T], Hashable] | None = None,
        limit: int = MAX_GROUP,
    ) -> None:
        self._call = call
        self._key: Callable[[T], Hashable] = key if key is not None else _itself
        self._limit = limit
        self._pending: list[_Slot[T, R]] = []
        self._busy = False
        self._lock = threading.Condition()
        self.calls = 0  # how many calls were made (for tests and benchmarks)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item, self._key(item))
        with self._lock:
            self._pending.append(slot)
            while not slot.done:
                if self._busy:
                    self._lock.wait()
                    continue
                group = self._take()
                self._busy = True
                self._lock.release()
                try:
                    self._run(group)
                finally:
                    self._lock.acquire()
                    self._busy = False
                    self._lock.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _take(self) -> list[_Slot[T, R]]:
        group: list[_Slot[T, R]] = []
        keys: set[Hashable] = set()
        left: list[_Slot[T, R]] = []
        for slot in self._pending:
            if len(group) < self._limit and slot.key not in keys:
                group.append(slot)
                keys.add(slot.key)
            else:
                left.append(slot)
        self._pending = left
        return group

    def _run(self, group: list[_Slot[T, R]]) -> None:
        self.calls += 1
        try:
            results = self._call([slot.item for slot in group])
            if len(results) != len(group):
                raise RuntimeError(f"a grouped call returned {len(results)} results for {len(group)} items")
        except BaseException as exc:  # noqa: BLE001 - handed to each caller, who raises it
            for slot in group:
                slot.error, slot.done = exc, True
            return
        for slot, result in zip(group, results, strict=True):
            slot.result, slot.done = result, True
