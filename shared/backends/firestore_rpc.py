"""The two Firestore calls every connect makes, sent on the client's own gRPC channel as raw protobuf.

A connect commits its registry entry and reads its feed head. Through the
client's GAPIC layer (retry and timeout wrappers, a logging interceptor,
proto-plus messages) a commit cost the stream process about 1.5 ms of CPU here
and a one-document BatchGetDocuments 1.0-1.6 ms; on the channel directly 1.0
and 0.8-1.2 ms (one call at a time on the emulator, throwaway scripts;
``bench.connect_cost`` compares whole connects). Same channel, so the same endpoint and credentials; the
metadata is the client's, with the routing header its GAPIC layer adds. Errors
come back as ``google.api_core`` exceptions, as the client's do, so callers map
them the same way; retrying is the caller's (a ``Retry`` around these calls).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.cloud.firestore_v1.types.firestore import (
    BatchGetDocumentsRequest,
    BatchGetDocumentsResponse,
    CommitRequest,
    CommitResponse,
)

_SERVICE = "/google.firestore.v1.Firestore/"
BATCH_GET_REQUEST = BatchGetDocumentsRequest.pb()
COMMIT_REQUEST = CommitRequest.pb()
_BATCH_GET_RESPONSE = BatchGetDocumentsResponse.pb()
_COMMIT_RESPONSE = CommitResponse.pb()


class FirestoreRpc:
    """Raw document reads and commits on ``client``'s channel."""

    def __init__(self, client: Any, timeout: float) -> None:
        channel = client._firestore_api._transport.grpc_channel
        self._batch_get = channel.unary_stream(
            _SERVICE + "BatchGetDocuments",
            request_serializer=BATCH_GET_REQUEST.SerializeToString,
            response_deserializer=_BATCH_GET_RESPONSE.FromString,
        )
        self._commit = channel.unary_unary(
            _SERVICE + "Commit",
            request_serializer=COMMIT_REQUEST.SerializeToString,
            response_deserializer=_COMMIT_RESPONSE.FromString,
        )
        self.database = client._database_string
        self._database_metadata = (*tuple(client._rpc_metadata), _routing("database", self.database))
        self._timeout = timeout

    def commit(self, request: Any) -> Any:
        """A raw CommitRequest (its ``database`` set) sent as is; the raw CommitResponse."""
        try:
            return self._commit(request, metadata=self._database_metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _api_error(exc) from exc

    def fields(self, paths: Sequence[str], mask: Sequence[str]) -> list[Any | None]:
        """Each document's fields (a protobuf map of the ``mask`` fields), in order, None where it does not exist.

        One BatchGetDocuments, even for one document: a unary GetDocument costs
        this process less (0.4 against 0.8 ms) but answers a missing document with
        an error, which cost the emulator 2.8 ms of CPU against 0.8 ms, and a
        connect of a user without a feed yet asks for one.
        """
        request = BATCH_GET_REQUEST(database=self.database, documents=paths, mask={"field_paths": mask})
        found: dict[str, Any] = {}
        try:
            for response in self._batch_get(request, metadata=self._database_metadata, timeout=self._timeout):
                if response.WhichOneof("result") == "found":
                    found[response.found.name] = response.found.fields
        except grpc.RpcError as exc:
            raise _api_error(exc) from exc
        return [found.get(path) for path in paths]


_SHARED: weakref.WeakKeyDictionary[Any, dict[float, FirestoreRpc]] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def rpc_for(client: Any, timeout: float) -> FirestoreRpc:
    """``client``'s one ``FirestoreRpc`` for ``timeout``: built on first use, then shared by all its callers.

    The store's head read and the registry's commit go out on the same client;
    building the stubs once for both keeps their setup in one place. Gone with the client.
    """
    with _SHARED_LOCK:
        by_timeout = _SHARED.setdefault(client, {})
        rpc = by_timeout.get(timeout)
        if rpc is None:
            rpc = by_timeout[timeout] = FirestoreRpc(client, timeout)
        return rpc


def _routing(name: str, value: str) -> tuple[str, str]:
    """The ``x-goog-request-params`` header the GAPIC layer adds to each call."""
    header: tuple[str, str] = routing_header.to_grpc_metadata(((name, value),))  # type: ignore[no-untyped-call]
    return header


def _api_error(exc: grpc.RpcError) -> gexc.GoogleAPICallError:
    error: gexc.GoogleAPICallError = gexc.from_grpc_error(exc)  # type: ignore[no-untyped-call]
    return error
