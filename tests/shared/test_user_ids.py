"""User ids, from events and from tokens: what validation accepts, Firestore stores (on the emulator).

A signed token whose ``sub`` held a lone surrogate passed validation and made the
Firestore client raise UnicodeEncodeError (a 500). Whatever text an id is made
of, validate_user_id either refuses it with InvalidEventError, or the store
writes a notification under it and reads it back under the same id.
"""

from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.ingest.ingest import Outcome, PubsubMessage, ingest
from shared.backends import Backends
from shared.backends.firestore_store import FirestoreStore
from shared.backends.memory import MemoryChannel, MemoryDeadLetters
from shared.config import Settings
from shared.errors import InvalidEventError
from shared.events import MAX_USER_ID, validate_user_id
from tests.support.events import valid_event
from tests.support.fuzzing import examples

EDGES = [
    "\ud800",
    "a\udfffb",
    "\udbff\udfff",  # two escapes JSON joins into one character (U+10FFFF): valid once parsed
    "__x__",
    "__",
    ".",
    "..",
    "...",
    "a/b",
    "\x00",
    "tab\there",
    "\u2028\u2029",
    "\ufeff",
    "\U0010ffff",
    "x" * MAX_USER_ID,
    "é" * MAX_USER_ID,
    "🎬" * MAX_USER_ID,  # 512 bytes of UTF-8, under Firestore's 1,500-byte id limit
    "x" * (MAX_USER_ID + 1),
]
# Every code point, surrogates included (Hypothesis leaves them out unless asked).
any_text = st.text(st.characters(exclude_categories=()) | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))


@settings(
    max_examples=examples(80),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(user_id=st.sampled_from(EDGES) | any_text)
def test_an_accepted_user_id_is_stored_and_read_back_by_firestore(settings: Settings, user_id: str) -> None:
    # json.dumps escapes a lone surrogate as \ud800, exactly as a worker's JSON would carry it.
    title = f"user-id-{uuid.uuid4().hex}"  # examples repeat ids: find this example's notification
    data = json.dumps(valid_event(user_id, title=title)).encode()
    parsed = json.loads(data)["user_id"]
    try:
        validate_user_id(parsed)
    except InvalidEventError:
        accepted = False
    else:
        accepted = True
    store = FirestoreStore(settings.project_id, timeout=10)
    backends = Backends(store, MemoryChannel(), MemoryDeadLetters())
    try:
        outcome = ingest(PubsubMessage(data, {}, "m-user-id"), backends, settings)
        if not accepted:
            assert outcome is Outcome.DEAD_LETTERED
            return
        assert outcome is Outcome.STORED
        [stored] = [n for n in store.page(parsed, 100).notifications if n.title == title]
        assert stored.user_id == parsed
    finally:
        store.close()
