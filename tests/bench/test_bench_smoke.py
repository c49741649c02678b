"""The bench's load generator against the real stream service (memory backend), small and fast.

Keeps bench/ from rotting: the same code path `make bench` uses for its
fan-out tier, at 50 streams and a low rate. Asserts correctness (nothing lost,
nothing duplicated, every stream established) and the shape of the results,
never a timing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from bench.fanout import Load, run_load
from bench.report import write_markdown, write_plot
from bench.run import _stream_env, _token_paths
from bench.servers import ROOT, start_stream_service


def test_fanout_load_on_the_stream_service_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    load = Load("smoke", streams=50, users=25, rate=40, duration=2)
    server = start_stream_service(_stream_env(max_per_user=3))
    try:
        paths = _token_paths(load.users)
        outcome = asyncio.run(run_load("inject", server, load, connect_rate=200, path_for=paths.__getitem__))
    finally:
        server.stop()
    result = outcome.result

    assert result["established"] == 50, result["connect_errors"]
    assert result["notifications_sent"] == 80
    # 25 users with 2 streams each: every notification reaches 2 streams.
    assert result["expected_deliveries"] == 160
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["misrouted"] == 0
    assert result["delivered"] == 160
    for key in ("p50", "p90", "p99", "max"):
        assert isinstance(result["latency_ms"][key], float)
    assert result["rss_after_connect_mb"] > 0
    assert result["server_cpu_s"] >= 0

    results = {"mode": "smoke", "fanout": {"loads": {"smoke": {"stream": result}}, "notes": []}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    write_markdown(results, tmp_path / "results.md")
    write_plot({"smoke:stream": outcome.latencies}, tmp_path / "latency.png")
    assert "| lost | 0 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "latency.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["fanout"]["loads"]["smoke"]["stream"]["lost"] == 0


def test_routing_bench_on_both_emulators_routes_each_message_to_its_users_process_only(
    tmp_path: Path, emulators_installed: None
) -> None:
    """bench.routing, tiny: two stream processes on the real channel path, the Firestore registry and store."""
    out = tmp_path / "routing.json"
    command = [
        sys.executable,
        "-m",
        "bench.routing",
        *("--processes", "2", "--streams", "40", "--rate", "40", "--duration", "1"),
        *("--connect-rate", "100", "--connect-warmup", "10", "--connect-sample", "20"),
        *("--same-user", "3", "--same-user-rounds", "2", "--passes", "routed", "--persist", "--out", str(out)),
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=240)
    result = json.loads(out.read_text())

    (routed,) = result["passes"]
    assert routed["streams"] == 40
    assert routed["published"] == 40 and routed["publish_errors"] == 0
    assert routed["persisted"] is True  # the changes were in the store before they were published
    assert routed["lost"] == 0 and routed["duplicated"] == 0 and routed["misrouted"] == 0
    assert routed["delivered"] == routed["expected_deliveries"] == 40
    # Each message went to the one process holding its user's stream, not to both.
    assert sum(routed["received_per_process"]) == 40
    assert result["connect_alone_ms"]["count"] == 20 and result["connect_alone_ms"]["failed"] == 0
    assert result["connect_same_user_ms"]["count"] == 6
