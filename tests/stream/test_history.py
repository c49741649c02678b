"""The history API (SPEC section 5) of the running service, on the Firestore emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared.backends.firestore_store import FirestoreStore
from shared.config import Settings
from shared.events import ContentEvent
from shared.feed import Verdict
from shared.notification import build_notification
from tests.support.processes import ManagedProcess
from tests.support.stream import auth, token_for

API = "/api/v1/notifications"


def _seed(settings: Settings, user: str, count: int) -> list[str]:
    """``count`` notifications of ``user`` stored directly; their ids, oldest first."""
    store = FirestoreStore(settings.project_id)
    start = datetime.now(UTC) - timedelta(minutes=5)
    ids = []
    try:
        for number in range(count):
            event = ContentEvent(
                event_type="content_generation.completed",
                user_id=user,
                title=f"n{number}",
                message="",
                event_id=f"seed-{user}-{number}",
            )
            applied = store.apply(build_notification(event, 30, start + timedelta(seconds=number)))
            assert applied.notification is not None and applied.verdict is Verdict.CREATE
            ids.append(applied.notification.id)
    finally:
        store.close()
    return ids


@pytest.fixture
def client(stream_server: ManagedProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_server.url, timeout=10) as client:
        yield client


def test_pages_newest_first_with_cursor_and_unread_count(
    client: httpx.Client, settings: Settings, new_user: Callable[[], str]
) -> None:
    user = new_user()
    ids = _seed(settings, user, 5)
    headers = auth(token_for(user))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = client.get(API, params=params, headers=headers).json()
        assert body["unread_count"] == 5
        seen += [n["id"] for n in body["notifications"]]
        assert all(n["user_id"] == user for n in body["notifications"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3


def test_mark_read_unread_delete_and_clear(
    client: httpx.Client, settings: Settings, new_user: Callable[[], str]
) -> None:
    user = new_user()
    ids = _seed(settings, user, 4)
    headers = auth(token_for(user))

    response = client.post(f"{API}/mark-read", json={"notification_ids": ids[:2]}, headers=headers)
    assert response.json() == {"updated": 2}
    assert client.post(f"{API}/mark-read", json={"notification_ids": ids[:2]}, headers=headers).json() == {"updated": 0}
    unread = client.get(API, params={"unread_only": "true"}, headers=headers).json()
    assert [n["id"] for n in unread["notifications"]] == [ids[3], ids[2]] and unread["unread_count"] == 2

    assert client.post(f"{API}/mark-unread", json={"notification_ids": [ids[0]]}, headers=headers).json() == {
        "updated": 1
    }
    assert client.post(f"{API}/mark-read", json={"all": True}, headers=headers).json() == {"updated": 3}
    assert client.get(API, headers=headers).json()["unread_count"] == 0

    assert client.delete(f"{API}/{ids[1]}", headers=headers).status_code == 204
    missing = client.delete(f"{API}/{ids[1]}", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.delete(API, headers=headers).json() == {"deleted": 3}
    # Four new, then mark read, mark unread, mark all read, delete, clear: nine changes of the user's feed.
    assert client.get(API, headers=headers).json() == {
        "notifications": [],
        "unread_count": 0,
        "next_cursor": None,
        "stream_cursor": "9-0",
    }


def test_a_user_can_never_read_or_change_another_users_notifications(
    client: httpx.Client, settings: Settings, new_user: Callable[[], str]
) -> None:
    owner, intruder = new_user(), new_user()
    ids = _seed(settings, owner, 2)
    _seed(settings, intruder, 1)
    headers = auth(token_for(intruder))
    listing = client.get(API, headers=headers).json()
    assert ids[0] not in json.dumps(listing) and listing["unread_count"] == 1
    assert client.post(f"{API}/mark-read", json={"notification_ids": ids}, headers=headers).json() == {"updated": 0}
    assert client.delete(f"{API}/{ids[0]}", headers=headers).status_code == 404
    assert client.delete(API, headers=headers).json() == {"deleted": 1}
    # Also not through the cursor: it only bounds the caller's own collection.
    assert client.get(API, params={"cursor": "f" * 24}, headers=headers).json()["notifications"] == []

    owners = client.get(API, headers=auth(token_for(owner))).json()
    assert sorted(n["id"] for n in owners["notifications"]) == ids and owners["unread_count"] == 2


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", API, {"params": {"limit": "0"}}, 400),
        ("GET", API, {"params": {"limit": "101"}}, 400),
        ("GET", API, {"params": {"limit": "ten"}}, 400),
        ("GET", API, {"params": {"cursor": "not-an-id"}}, 400),
        ("GET", API, {"params": {"unread_only": "maybe"}}, 400),
        ("POST", f"{API}/mark-read", {"content": b"{not json"}, 400),
        ("POST", f"{API}/mark-read", {"content": b"\xff\xfe"}, 400),
        ("POST", f"{API}/mark-read", {"content": b""}, 400),
        ("POST", f"{API}/mark-read", {"json": ["a"]}, 400),
        ("POST", f"{API}/mark-read", {"json": {}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"notification_ids": []}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"notification_ids": "abc"}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"notification_ids": [1, 2]}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"notification_ids": ["../other"]}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"notification_ids": ["0" * 24] * 501}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"all": False}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"all": True, "notification_ids": ["0" * 24]}}, 400),
        ("POST", f"{API}/mark-read", {"json": {"ids": ["0" * 24]}}, 400),
        ("POST", f"{API}/mark-unread", {"content": b'{"notification_ids": ["' + b"0" * 70000 + b'"]}'}, 413),
        ("DELETE", f"{API}/not-an-id", {}, 400),
        ("PUT", API, {}, 405),
        ("GET", f"{API}/nothing/here", {}, 404),
    ],
)
def test_bad_requests_get_json_errors(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, object], status: int, new_user: Callable[[], str]
) -> None:
    response = client.request(method, path, headers=auth(token_for(new_user())), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


def test_history_needs_a_token(client: httpx.Client) -> None:
    response = client.get(API)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
