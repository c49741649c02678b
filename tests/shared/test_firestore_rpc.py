"""Raw calls on the Firestore client's channel (every connect's head read and registry commit), on the emulator."""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.backends.firestore_rpc import COMMIT_REQUEST, FirestoreRpc, rpc_for
from shared.config import Settings

MASK = ("seq", "muted_event_types")


def _path(client: firestore.Client, user: str) -> str:
    return str(client.collection("users").document(user)._document_path)


def _seq(fields: Any) -> int | None:
    return None if fields is None else int(fields["seq"].integer_value)


def test_one_document_and_several_are_read_with_the_mask_and_missing_ones_are_none(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    client = firestore.Client(project=settings.project_id)
    users = [new_user() for _ in range(3)]
    for seq, user in enumerate(users[:2], start=4):
        client.collection("users").document(user).set({"seq": seq, "muted_event_types": ["x"], "other": "y"})
    reads = FirestoreRpc(client, timeout=10)
    paths = [_path(client, user) for user in users]

    one = reads.fields(paths[:1], MASK)[0]
    assert one is not None
    assert _seq(one) == 4
    assert [v.string_value for v in one["muted_event_types"].array_value.values] == ["x"]
    assert "other" not in one  # the mask is applied by the server
    assert reads.fields(paths[2:], MASK) == [None]
    assert [_seq(f) for f in reads.fields(paths, MASK)] == [4, 5, None]
    assert [_seq(f) for f in reads.fields([paths[2], paths[1]], MASK)] == [None, 5]


def test_an_unreachable_firestore_raises_the_client_libraries_exception(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the store's retry and error mapping expect: google.api_core's ServiceUnavailable, not a grpc error."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{bound.getsockname()[1]}")
        client = firestore.Client(project=settings.project_id)
        reads = FirestoreRpc(client, timeout=5)
        for paths in ([_path(client, "a")], [_path(client, "a"), _path(client, "b")]):
            with pytest.raises(gexc.ServiceUnavailable):
                reads.fields(paths, MASK)


def test_a_commit_goes_through_and_its_transform_results_come_back(
    settings: Settings, new_user: Callable[[], str]
) -> None:
    client = firestore.Client(project=settings.project_id)
    rpc = FirestoreRpc(client, timeout=10)
    path = _path(client, new_user())
    request = COMMIT_REQUEST(database=rpc.database)
    for _ in range(2):
        write = request.writes.add()
        write.update.name = path
        write.update_mask.SetInParent()  # an empty mask: only the transform changes the document
        write.update_transforms.add(field_path="seq").increment.integer_value = 3
        response = rpc.commit(request)
        del request.writes[:]
    assert response.write_results[0].transform_results[0].integer_value == 6
    assert _seq(rpc.fields([path], MASK)[0]) == 6


def test_a_client_has_one_rpc_per_timeout_shared_by_its_callers_and_gone_with_it(settings: Settings) -> None:
    first, second = firestore.Client(project=settings.project_id), firestore.Client(project=settings.project_id)
    shared = rpc_for(first, 10)
    assert rpc_for(first, 10) is shared
    assert rpc_for(first, 5) is not shared
    assert rpc_for(second, 10) is not shared

    held = weakref.ref(first)
    del first, shared
    gc.collect()
    assert held() is None  # the shared calls do not keep a closed store's client alive
