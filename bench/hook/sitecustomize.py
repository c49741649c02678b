"""Loaded by Python at start-up in the bench's child processes (this folder is first on their PYTHONPATH).

Does nothing unless BENCH_HOOK_DIR is set; then counts Firestore and Pub/Sub
operations (bench/cost_hook.py). Never on the path of anything deployed.
"""

import os

if os.environ.get("BENCH_HOOK_DIR"):
    from bench.cost_hook import install

    install(os.environ["BENCH_HOOK_DIR"])
