"""make bench: fan-out of our stream service vs nginx+nchan, the full pipeline on the emulators, and cost.

    python -m bench.run            # full, under 10 minutes on 2 cores
    python -m bench.run --quick    # the same shape at a tenth of the load, under 2 minutes
    python -m bench.run --only fanout|pipeline --loads a,c --targets stream,nchan

Writes bench/results.json, bench/results.md and bench/fanout_latency.png (or
the paths given). Nothing is asserted: the figures are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fanout import FULL_LOADS, QUICK_LOADS, Load, Outcome, run_load
from bench.loadgen import install_uvloop, raise_open_files_limit
from bench.servers import ROOT, install_nchan, start_nchan, start_stream_service, stop_on_sigterm

logger = logging.getLogger("bench")

# A fresh key per run: the servers and the load generator share it, nothing else does.
BENCH_JWT_SECRET = secrets.token_hex(32)
HEARTBEAT_SECONDS = 10


def _stream_env(max_per_user: int, heartbeat: float = HEARTBEAT_SECONDS) -> dict[str, str]:
    return {
        "NOTIFICATIONS_BACKEND": "memory",
        "JWT_SECRET": BENCH_JWT_SECRET,
        "SSE_HEARTBEAT_INTERVAL": str(heartbeat),
        "SSE_MAX_CONNECTIONS_PER_USER": str(max_per_user),
        "SSE_SEND_QUEUE_SIZE": "1024",
        "LOG_LEVEL": "WARNING",
        "DEMO_PAGE": "0",
    }


def _token_paths(users: int) -> dict[str, str]:
    from shared.tokens import load_token_settings, mint_token

    settings = load_token_settings({"JWT_SECRET": BENCH_JWT_SECRET})
    return {
        f"bu{n:05d}": f"/api/v1/notifications/stream?token={mint_token(f'bu{n:05d}', settings, ttl_seconds=7200)}"
        for n in range(users)
    }


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run_fanout(
    loads: Sequence[Load], targets: Sequence[str], connect_rate: float, heartbeat: int = HEARTBEAT_SECONDS
) -> dict[str, Any]:
    section: dict[str, Any] = {"loads": {}, "notes": [], "latencies": {}}
    if "nchan" in targets:
        why_not = install_nchan()
        if why_not:
            section["notes"].append(f"nchan skipped: {why_not}")
            logger.warning("nchan skipped: %s", why_not)
            targets = [t for t in targets if t != "nchan"]
    ours = "stream"
    paths = _token_paths(max(load.users for load in loads))
    for load in loads:
        per_target: dict[str, Any] = {}
        for target in targets:
            label = ours if target == "stream" else target
            logger.warning("load %s on %s: %s", load.name, label, load.label)
            profile_dir: str | None = None
            path_for: Callable[[str], str]
            if target == "nchan":
                server = start_nchan(heartbeat)
                path_for = _nchan_path
                kind = "nchan"
            else:
                per_user = max(3, -(-load.streams // load.users) + 1)
                profile_dir = tempfile.mkdtemp(prefix="bench-profile-")
                profile_env = {"BENCH_HOOK_DIR": profile_dir, "BENCH_COUNT": "0", "BENCH_PROFILE": "1"}
                server = start_stream_service({**_stream_env(per_user, heartbeat), **profile_env}, hook=True)
                path_for = paths.__getitem__
                kind = "inject"
            try:
                outcome: Outcome = await run_load(
                    kind, server, load, connect_rate=connect_rate, path_for=path_for, profile_dir=profile_dir
                )
            except Exception as exc:  # a failed run is reported, not fatal to the others
                logger.exception("load %s on %s failed", load.name, label)
                per_target[label] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            finally:
                alive = server.process.poll() is None
                server.stop()
                if profile_dir is not None:
                    shutil.rmtree(profile_dir, ignore_errors=True)
            outcome.result["server_alive_at_end"] = alive
            per_target[label] = outcome.result
            section["latencies"][f"{load.name}:{label}"] = outcome.latencies
            logger.warning("  %s", _brief(outcome.result))
        section["loads"][load.name] = per_target
    return section


def _nchan_path(user: str) -> str:
    return f"/sub?id={user}"


def _brief(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return (
        f"established {result['established']} lost {result['lost']} dup {result['duplicated']} "
        f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms; rss/stream {result['rss_per_stream_kb']} KB; "
        f"cpu/1000 {result['server_cpu_ms_per_1000_deliveries']} ms; client cpu {result['client_cpu_pct']}%"
    )


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a tenth of the load, under 2 minutes")
    parser.add_argument("--only", choices=("fanout", "pipeline"), help="run one part")
    parser.add_argument("--loads", default="a,b,c", help="fan-out loads to run (a,b,c)")
    parser.add_argument("--targets", default="stream,nchan", help="fan-out servers (stream,nchan)")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="new streams per second")
    parser.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS, help="fan-out heartbeat seconds")
    parser.add_argument("--pipeline-rate", type=float, help="events per second in the pipeline (default 20, quick 10)")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="directory for results.json/.md/.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    raise_open_files_limit()
    install_uvloop()

    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": _load_average(),
        },
        "heartbeat_seconds": args.heartbeat,
        "connect_rate_per_s": args.connect_rate,
    }
    latencies: dict[str, list[float]] = {}
    if args.only in (None, "fanout"):
        wanted = set(args.loads.split(","))
        loads = [load for load in (QUICK_LOADS if args.quick else FULL_LOADS) if load.name in wanted]
        targets = [t for t in args.targets.split(",") if t]
        fanout = asyncio.run(run_fanout(loads, targets, args.connect_rate, args.heartbeat))
        latencies = fanout.pop("latencies")
        results["fanout"] = fanout
    if args.only in (None, "pipeline"):
        from bench.pipeline import run_pipeline

        results["pipeline"] = run_pipeline(quick=args.quick, rate=args.pipeline_rate)
    from bench.cost import cost_section

    if "pipeline" in results:
        results["cost"] = cost_section(results["pipeline"])
    results["machine"]["load_average_at_end"] = _load_average()
    results["elapsed_seconds"] = round(time.time() - started, 1)

    from bench.report import write_markdown, write_plot

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "results.md")
    if latencies:
        write_plot(latencies, out / "fanout_latency.png")
    logger.warning("wrote %s (%.0f s)", out / "results.json", results["elapsed_seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
