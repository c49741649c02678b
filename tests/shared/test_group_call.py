"""Calls grouped while one is in flight (shared/backends/group_call.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.backends.group_call import GroupCall
from tests.support.waiting import wait_for


class _Gated:
    """A call that blocks until released, recording each group it was given."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[str]) -> list[str]:
        self.groups.append(list(items))
        self.entered.set()
        assert self.release.wait(10), "never released"
        return [item.upper() for item in items]


def _waiting(group: GroupCall[str, str], count: int) -> bool:
    with group._lock:
        return len(group._pending) == count


def test_a_lone_call_goes_out_at_once_and_callers_that_wait_share_the_next() -> None:
    call = _Gated()
    group: GroupCall[str, str] = GroupCall(call, key=lambda item: item)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.submit, "a")
        assert call.entered.wait(10)
        later = [pool.submit(group.submit, item) for item in "bcde"]
        wait_for(lambda: _waiting(group, 4), what="four callers waiting")
        call.release.set()
        assert first.result(10) == "A"
        assert [f.result(10) for f in later] == ["B", "C", "D", "E"]
    assert call.groups[0] == ["a"]
    assert sorted(call.groups[1]) == ["b", "c", "d", "e"], "the four that waited went out in one call"
    assert group.calls == 2


def test_items_with_one_key_never_share_a_call() -> None:
    call = _Gated()
    group: GroupCall[str, str] = GroupCall(call, key=lambda item: item[0])
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.submit, "x0")
        assert call.entered.wait(10)
        later = [pool.submit(group.submit, item) for item in ("u1", "u2", "v1")]
        wait_for(lambda: _waiting(group, 3), what="three callers waiting")
        call.release.set()
        assert first.result(10) == "X0"
        assert sorted(f.result(10) for f in later) == ["U1", "U2", "V1"]
    assert all(len({item[0] for item in g}) == len(g) for g in call.groups), call.groups
    assert group.calls == 3


def test_a_failed_call_raises_in_every_caller_it_held_and_the_next_call_still_runs() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()

    def flaky(items: list[str]) -> list[str]:
        calls.append(list(items))
        if len(calls) == 1:
            assert gate.wait(10)
            return ["ok"]
        if len(calls) == 2:
            raise ConnectionError("backend down")
        return ["fine"] * len(items)

    group: GroupCall[str, str] = GroupCall(flaky, key=lambda item: item)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(group.submit, "a")
        wait_for(lambda: len(calls) == 1, what="the first call")
        failing = [pool.submit(group.submit, item) for item in "bc"]
        wait_for(lambda: _waiting(group, 2), what="two callers waiting")
        gate.set()
        assert first.result(10) == "ok"
        for future in failing:
            with pytest.raises(ConnectionError, match="backend down"):
                future.result(10)
    assert group.submit("d") == "fine"


def test_a_call_that_returns_too_few_results_is_an_error_not_a_wrong_answer() -> None:
    group: GroupCall[str, str] = GroupCall(lambda items: [], key=lambda item: item)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit("a")
