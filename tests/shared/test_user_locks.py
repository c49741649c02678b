"""Changes of one user's feed take turns within a process; a turn that does not come in time asks for a retry."""

from __future__ import annotations

import threading

import pytest

from shared.backends.user_locks import UserLocks
from shared.errors import BackendUnavailable


def test_one_users_changes_take_turns() -> None:
    locks = UserLocks()
    inside = 0
    most = 0
    guard = threading.Lock()

    def change() -> None:
        nonlocal inside, most
        with locks.turn("u1", timeout=10):
            with guard:
                inside += 1
                most = max(most, inside)
            threading.Event().wait(0.002)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=change) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1


def test_a_turn_that_does_not_come_in_time_is_a_retryable_failure() -> None:
    locks = UserLocks(stripes=1)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locks.turn("u1", timeout=1):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(BackendUnavailable, match="busy"), locks.turn("u2", timeout=0.05):
            pass
    finally:
        release.set()
        thread.join()


def test_other_users_do_not_wait() -> None:
    locks = UserLocks()
    with locks.turn("u1", timeout=1):
        done = threading.Event()

        def other() -> None:
            with locks.turn("u2", timeout=1):
                done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
    assert done.is_set()
