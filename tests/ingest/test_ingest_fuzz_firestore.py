"""Hypothesis on the real Firestore: what validation lets through, Firestore stores and gives back unchanged;
what Firestore would refuse is dead-lettered, never retried forever."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryChannel, MemoryDeadLetters
from shared.config import Settings
from tests.support.events import valid_event
from tests.support.fuzzing import examples

metadata_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
texts = st.text(min_size=1, max_size=60)


def _storable(value: Any) -> bool:
    """What Firestore can store, stated here rather than read from the validator: no empty or
    ``__reserved__`` map keys, no array directly inside an array."""
    if isinstance(value, dict):
        return all(k and not (k.startswith("__") and k.endswith("__")) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(not isinstance(v, list) and _storable(v) for v in value)
    return True


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(metadata=st.dictionaries(st.text(max_size=10), metadata_values, max_size=4), title=texts, message=texts)
def test_stored_notifications_read_back_unchanged(
    settings: Settings, metadata: dict[str, Any], title: str, message: str
) -> None:
    store = FirestoreStore(settings.project_id, timeout=10)
    dead_letters = MemoryDeadLetters()
    backends = Backends(store, MemoryChannel(), dead_letters)
    user = f"fuzz-{uuid.uuid4().hex[:8]}"
    body = valid_event(user, metadata=metadata, title=title, message=message)
    try:
        outcome = ingest(PubsubMessage(json.dumps(body).encode(), {}, "m", datetime.now(UTC)), backends, settings)
        # Whitespace alone is no title; everything else generated here is within SPEC section 2.
        if _storable(metadata) and title.strip():
            assert outcome is Outcome.STORED, dead_letters.messages
            [stored] = store.page(user, 10).notifications
            assert (stored.title, stored.message) == (title, message)
            assert json.dumps(stored.metadata, sort_keys=True) == json.dumps(metadata, sort_keys=True)
        else:
            assert outcome is Outcome.DEAD_LETTERED
            [(_, attributes)] = dead_letters.messages
            assert attributes["error"]
            assert store.page(user, 10).notifications == []
    finally:
        store.close()
