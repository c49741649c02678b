"""The feed head on Firestore, with and without a known broadcast number (emulator, no server)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from shared.backends.firestore_store import FirestoreStore
from shared.config import Settings
from shared.events import ContentEvent
from shared.notification import build_notification


def test_the_head_with_a_known_broadcast_number_reads_the_same_user_state(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    store = FirestoreStore(settings.project_id, timeout=10)
    user = new_user()
    for number in range(3):
        event = ContentEvent("content_generation.completed", user, f"t{number}", "", uuid.uuid4().hex)
        assert store.apply(build_notification(event, 30, datetime.now(UTC))).change is not None
    store.set_muted(user, frozenset({"content_generation.progress"}))
    full = store.head(user)
    known = store.head(user, full.broadcast_seq + 7)
    assert full.user_seq >= 3
    assert (known.user_seq, known.muted_event_types) == (full.user_seq, full.muted_event_types)
    assert known.broadcast_seq == full.broadcast_seq + 7
    assert store.head(new_user(), 2).user_seq == 0
