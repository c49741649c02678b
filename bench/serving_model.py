"""Serving-model comparison for the stream service: how many idle SSE streams, and RSS per stream.

Models measured, each on the embedded memory backends with the same JWT check:

- ``asgi-uvloop``: the real service with its own start command, ``python -m functions.stream.serve`` (uvloop, httptools)
- ``asgi-asyncio``: the same app on uvicorn's pure-Python stack (``--loop asyncio --http h11``), for comparison
- ``flask-gthread``: a minimal Flask SSE endpoint on gunicorn's thread worker (one thread per stream),
  the shape a Flask/functions-framework service would have

For each model and stream count: start the server, open N streams (raw sockets,
each waits for ``connection.established``), then read the RSS of the server's
process tree. Per-stream RSS = (RSS with N streams - RSS idle) / N. Then, for
the ASGI models, ``--rounds`` bursts of one notification per stream through
the bench injection route (``bench.inject_app``): latency from the POST to
receipt (includes the POST of the whole burst and this process reading every
socket, so it is a harness figure) and the server's CPU time per delivered
event (utime + stime from /proc, independent of the client).

    .venv/bin/python -m bench.serving_model --streams 1000 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import raise_open_files_limit
from devtools.emulators import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-serving-model-secret-0123456789abcdef"  # noqa: S105 - a throwaway local key
PATH = "/api/v1/notifications/stream"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _tree_rss(pid: int) -> tuple[int, int]:
    """RSS bytes and thread count of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total = threads = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        rss = re.search(r"VmRSS:\s+(\d+) kB", status)
        count = re.search(r"Threads:\s+(\d+)", status)
        total += int(rss.group(1)) * 1024 if rss else 0
        threads += int(count.group(1)) if count else 0
    return total, threads


# The Flask model --------------------------------------------------------------------------


def create_flask_app() -> Any:
    """A minimal Flask SSE endpoint (gunicorn factory: ``bench.serving_model:create_flask_app()``)."""
    from flask import Flask, Response, request

    from functions.stream import sse
    from functions.stream.config import get_stream_settings
    from shared.errors import AuthError
    from shared.tokens import verify_token

    app = Flask(__name__)
    settings = get_stream_settings()

    @app.get(PATH)
    def stream() -> Any:
        try:
            claims = verify_token(request.args.get("token", ""), settings)
        except AuthError as exc:
            return {"error": {"code": exc.code, "message": str(exc)}}, exc.status
        stop = threading.Event()

        def events() -> Any:
            yield sse.established("c", claims.user_id, settings.sse_heartbeat_interval, settings.sse_retry_ms)
            while not stop.wait(settings.sse_heartbeat_interval):
                yield sse.heartbeat()

        return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


# Servers ------------------------------------------------------------------------------------


@dataclass
class Result:
    model: str
    streams: int
    opened: int
    seconds_to_open: float
    rss_idle_mib: float
    rss_with_streams_mib: float
    kib_per_stream: float
    threads: int
    delivered: int = 0
    fanout_p50_ms: float = 0.0
    fanout_p99_ms: float = 0.0
    server_cpu_us_per_event: float = 0.0
    error: str = ""


def _command(model: str, port: int, streams: int) -> list[str]:
    if model == "asgi-uvloop":
        serve = ["-m", "functions.stream.serve", "--app", "bench.inject_app:app"]
        return [sys.executable, *serve, "--host", "127.0.0.1", "--port", str(port)]
    if model == "asgi-asyncio":
        extra = ["--loop", "asyncio", "--http", "h11"]
    else:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            str(streams + 50),
            "--worker-connections",
            str(streams + 100),
            "--timeout",
            "0",
            "bench.serving_model:create_flask_app()",
        ]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.inject_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--backlog",
        "4096",
        *extra,
    ]


def _start(model: str, streams: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFICATIONS_BACKEND": "memory",
        "JWT_SECRET": SECRET,
        "SSE_HEARTBEAT_INTERVAL": "30",
        "SSE_MAX_CONNECTIONS_PER_USER": "1000",
        "LOG_LEVEL": "WARNING",
        "DEMO_PAGE": "off",
    }
    fd, name = tempfile.mkstemp(prefix=f"serving-{model}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            _command(model, port, streams),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # inherits the open-files limit main() raised (no preexec_fn: see bench/servers.py)
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(Path(name).read_text()[-2000:])
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    time.sleep(1.0)  # let the process settle (lifespan, imports) before the idle reading
    return process, port, Path(name)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# Clients ------------------------------------------------------------------------------------


Stream = tuple[str, asyncio.StreamReader, asyncio.StreamWriter]


async def _open_streams(port: int, tokens: list[tuple[str, str]], concurrency: int = 64) -> list[Stream]:
    gate = asyncio.Semaphore(concurrency)
    streams: list[Stream] = []

    async def one(user: str, token: str) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {PATH}?token={token} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            buffer = b""
            while b"connection.established" not in buffer:
                chunk = await asyncio.wait_for(reader.read(4096), 30)
                if not chunk:
                    raise ConnectionError(buffer[:200].decode(errors="replace"))
                buffer += chunk
            streams.append((user, reader, writer))

    results = await asyncio.gather(*(one(u, t) for u, t in tokens), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        print(f"  {len(errors)} streams failed, e.g. {errors[0]!r}", file=sys.stderr)
    return streams


_STAMP = re.compile(rb'"bench_t":([0-9.]+)')


async def _fanout(port: int, streams: list[Stream], rounds: int) -> list[float]:
    """Latencies (s) from injection to receipt of one notification per stream, ``rounds`` times."""
    import httpx

    latencies: list[float] = []

    async def receive(reader: asyncio.StreamReader, want: int) -> None:
        buffer = b""
        got = 0
        while got < want:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            buffer += chunk
            for match in _STAMP.finditer(buffer):
                latencies.append(now - float(match.group(1)))
                got += 1
            buffer = buffer[buffer.rfind(b"\n") + 1 :]

    readers = [asyncio.ensure_future(receive(reader, rounds)) for _, reader, _ in streams]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for number in range(rounds):
            sent = time.time()
            batch = [
                {
                    "user_id": user,
                    "type": "notification",
                    "data": {"id": f"{int(sent * 1e6):014x}{index:010x}", "user_id": user, "bench_t": sent},
                    "sent_at": sent,
                }
                for index, (user, _, _) in enumerate(streams)
            ]
            response = await client.post("/internal/bench/inject", json=batch)
            response.raise_for_status()
            await asyncio.sleep(1.0 if number < rounds - 1 else 0)
    await asyncio.wait(readers, timeout=30)
    for task in readers:
        task.cancel()
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def measure(model: str, streams: int, rounds: int) -> Result:
    from shared.tokens import load_token_settings, mint_token

    settings = load_token_settings({"JWT_SECRET": SECRET})
    tokens = [(f"bench-{i}", mint_token(f"bench-{i}", settings, ttl_seconds=3600)) for i in range(streams)]
    process, port, log = _start(model, streams)
    try:
        idle, _ = _tree_rss(process.pid)

        async def run() -> Result:
            started = time.monotonic()
            opened_streams = await _open_streams(port, tokens)
            elapsed = time.monotonic() - started
            await asyncio.sleep(2.0)  # settle: lazily created state, thread stacks touched
            busy, threads = _tree_rss(process.pid)
            opened = len(opened_streams)
            latencies: list[float] = []
            cpu = 0.0
            if rounds and model.startswith("asgi"):
                cpu_before = _cpu_seconds(process.pid)
                latencies = await _fanout(port, opened_streams, rounds)
                cpu = _cpu_seconds(process.pid) - cpu_before
            for _, _, writer in opened_streams:
                writer.close()
            per_stream = (busy - idle) / opened / 1024 if opened else 0.0
            return Result(
                model,
                streams,
                opened,
                round(elapsed, 2),
                round(idle / 2**20, 1),
                round(busy / 2**20, 1),
                round(per_stream, 1),
                threads,
                len(latencies),
                round(_percentile(latencies, 0.5) * 1000, 1),
                round(_percentile(latencies, 0.99) * 1000, 1),
                round(cpu / len(latencies) * 1e6, 1) if latencies else 0.0,
            )

        return asyncio.run(run())
    except Exception as exc:  # a model that cannot hold N streams is a result, not a crash
        return Result(model, streams, 0, 0.0, 0.0, 0.0, 0.0, 0, error=f"{exc!r}"[:300])
    finally:
        _stop(process)
        log.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--models", nargs="+", default=["asgi-uvloop", "asgi-asyncio", "flask-gthread"])
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds (one notification per stream each)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    results = []
    print(
        "| model | streams | opened | s to open | RSS idle MiB | RSS with streams MiB | KiB/stream | threads"
        " | delivered | fan-out p50 ms | fan-out p99 ms | server CPU us/event |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for count in args.streams:
            result = measure(model, count, args.rounds)
            results.append(result)
            row = (
                f"| {result.model} | {result.streams} | {result.opened} | {result.seconds_to_open} | "
                f"{result.rss_idle_mib} | {result.rss_with_streams_mib} | {result.kib_per_stream} | {result.threads} | "
                f"{result.delivered} | {result.fanout_p50_ms} | {result.fanout_p99_ms} | "
                f"{result.server_cpu_us_per_event} |"
            )
            print(row + (f" error: {result.error}" if result.error else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
