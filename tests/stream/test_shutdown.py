"""A stream process stops within 10 s of SIGTERM, whatever state its backends are in (Cloud Run's budget).

2,000 streams held by one process on private emulators (so killing them
disturbs no other test), SIGTERM with the backends up and with both gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from bench.loadgen import StreamPool, raise_open_files_limit
from devtools import emulators as emulator_tools
from shared.backends.pubsub_channel import ensure_topics
from tests.support.processes import ManagedProcess
from tests.support.sse import EventStream
from tests.support.stream import start_stream_service, token_for

STREAMS = 2000
USERS = 1000  # two streams each, and a limit of two: an old entry that still counted would refuse a reconnect
BUDGET_SECONDS = 10.0


@pytest.fixture
def private_emulators(
    emulators_installed: None,
) -> Iterator[tuple[emulator_tools.Emulator, emulator_tools.Emulator, str]]:
    project = f"shutdown-{uuid.uuid4().hex[:8]}"
    pubsub = emulator_tools.start("pubsub", project)
    firestore = emulator_tools.start("firestore", project)
    yield pubsub, firestore, project
    firestore.stop()
    pubsub.stop()


def _env(pubsub: emulator_tools.Emulator, firestore: emulator_tools.Emulator, project: str) -> dict[str, str]:
    return {
        **pubsub.env(),
        **firestore.env(),
        "GOOGLE_CLOUD_PROJECT": project,
        "SSE_MAX_CONNECTIONS_PER_USER": "2",
        "SSE_HEARTBEAT_INTERVAL": "5",
        "LOG_LEVEL": "INFO",
    }


async def _hold(server: ManagedProcess, users: list[str]) -> StreamPool:
    """2,000 open streams; a connect refused with 503 (an emulator too slow on a busy machine) is retried."""
    pool = StreamPool("127.0.0.1", server.port)
    paths = {u: f"/api/v1/notifications/stream?token={token_for(u)}" for u in users}
    wanted = [users[n % len(users)] for n in range(STREAMS)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        await pool.open(wanted, paths.__getitem__, rate=200, head_timeout=60)
        failed = [s for s in pool.streams[-len(wanted) :] if s.status != 200 or s.error]
        assert all(s.status in (None, 503) for s in failed), {s.error for s in failed}
        wanted = [s.user for s in failed]
        if not wanted:
            break
        await asyncio.sleep(1.0)
    return pool


async def _sigterm_and_watch(server: ManagedProcess, pool: StreamPool) -> float:
    started = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    while server.process.poll() is None and time.monotonic() - started < BUDGET_SECONDS + 20:
        await asyncio.sleep(0.05)
    exited_after = time.monotonic() - started
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(s.closed for s in pool.streams):
        await asyncio.sleep(0.05)
    return exited_after


@pytest.mark.parametrize("backends", ["up", "gone"])
def test_sigterm_ends_2000_streams_and_the_process_within_10_s(
    private_emulators: tuple[emulator_tools.Emulator, emulator_tools.Emulator, str],
    backends: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raise_open_files_limit()
    pubsub, firestore, project = private_emulators
    # Through monkeypatch: left behind, these would point every later test at emulators stopped below.
    for key, value in {**pubsub.env(), **firestore.env()}.items():
        monkeypatch.setenv(key, value)
    ensure_topics(project, ["user-notifications"])
    users = [f"shut-{n:04d}-{uuid.uuid4().hex[:4]}" for n in range(USERS)]
    server = start_stream_service(_env(pubsub, firestore, project))
    try:

        async def hold_then_stop() -> tuple[StreamPool, float]:
            # One event loop for both: the streams must still be read when the server closes them.
            pool = await _hold(server, users)
            assert len(pool.established()) == STREAMS
            if backends == "gone":
                pubsub.stop()
                firestore.stop()
            return pool, await _sigterm_and_watch(server, pool)

        pool, exited_after = asyncio.run(hold_then_stop())
        assert server.process.poll() is not None, f"still running {exited_after:.1f} s after SIGTERM"
        assert exited_after < BUDGET_SECONDS, f"exited {exited_after:.1f} s after SIGTERM"
        reasons = [s.closing_reason for s in pool.established()]
        assert reasons.count("shutdown") == STREAMS, {r: reasons.count(r) for r in set(reasons)}
        log = server.log()
        assert "Traceback" not in log and '"severity": "ERROR"' not in log, log[-3000:]
        pool.close()
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)

    if backends == "gone":
        pubsub.start()
        firestore.start()
        ensure_topics(project, ["user-notifications"])
    # Elsewhere, each user's two slots are free again: the stopped instance's entries stopped counting.
    elsewhere = start_stream_service(_env(pubsub, firestore, project))
    try:
        for user in users[:5]:
            streams = [EventStream(elsewhere.url + "/api/v1/notifications/stream", token=token_for(user)) for _ in "ab"]
            try:
                assert [s.status for s in streams] == [200, 200], [s.error for s in streams]
            finally:
                for stream in streams:
                    stream.close()
    finally:
        elsewhere.stop()
