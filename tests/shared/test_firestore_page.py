"""A history page and its unread count on Firestore come from one snapshot (emulator, no server).

Regression: the history API read the page and the count as two separate
reads. A notification committed between them was in the count and not in the
page; the browser client, which adds what its stream delivered after the
page's newest notification, then showed one unread more than there were (seen
as a flaky demo test: a second tab's badge stuck at 3 where 2 were sent).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.backends.firestore_store import FirestoreStore
from shared.config import Settings
from shared.events import ContentEvent
from shared.notification import build_notification


def _notify(store: FirestoreStore, user: str, title: str) -> None:
    event = ContentEvent("content_generation.completed", user, title, "", uuid.uuid4().hex)
    assert store.apply(build_notification(event, 30, datetime.now(UTC))).change is not None


def test_a_notification_committed_between_the_reads_is_in_neither(
    settings: Settings, new_user: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FirestoreStore(settings.project_id, timeout=10)
    user = new_user()
    _notify(store, user, "first")
    count_as_of = store._unread_count

    def count_after_a_commit(user_id: str, read: dict[str, Any]) -> int:
        _notify(store, user, "second")  # after the page was read, before the count is
        return count_as_of(user_id, read)

    monkeypatch.setattr(store, "_unread_count", count_after_a_commit)
    page, unread = store.page_and_unread_count(user, 20)
    assert [n.title for n in page.notifications] == ["first"]
    assert unread == 1
    monkeypatch.undo()

    page, unread = store.page_and_unread_count(user, 20)
    assert sorted(n.title for n in page.notifications) == ["first", "second"]
    assert unread == 2
    assert (store.page(user, 20), store.unread_count(user)) == (page, unread)
