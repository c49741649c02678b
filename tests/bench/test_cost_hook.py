"""The bench's counting hook installs on today's code (in a child process: it patches classes).

Regression: after the store's ``persist`` became ``apply``, the hook raised at
start-up inside sitecustomize, which Python reports on stderr and then ignores,
so the ingest process ran uncounted and the cost model read zero Firestore
operations per notification.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys
from bench import cost_hook
cost_hook.install(sys.argv[1])
from shared.backends.firestore_store import FirestoreStore
from shared.backends.firestore_rpc import FirestoreRpc
from shared.backends.pubsub_channel import InstanceSubscription
import functions.ingest.ingest as ingest
# functools.wraps leaves __wrapped__ on each wrapper.
wrapped_now = (FirestoreStore.apply, InstanceSubscription.deliver, ingest.ingest)
for wrapped in (*wrapped_now, FirestoreRpc.commit, FirestoreRpc.fields):
    assert hasattr(wrapped, "__wrapped__"), wrapped
"""


def test_the_hook_wraps_what_ingest_and_the_stream_service_call(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_INGEST_TIMINGS": "1", "BENCH_PROFILE": "1"}
    env.pop("BENCH_HOOK_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
