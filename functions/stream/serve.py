"""Start the stream service: uvicorn with uvloop and a bounded httptools protocol.

    python -m functions.stream.serve [--host 0.0.0.0] [--port $PORT] [--app module:attribute]

HTTP_HEADER_TIMEOUT_SECONDS (default 10) bounds the time a request's head may
take to arrive (functions/stream/protocol.py). GRPC_EXPERIMENTS, when set, replaces
the gRPC tuning below.

The one way the stream server is started: Cloud Run's start command
(deploy.sh's Procfile), the local run, the bench and the tests. ``--app``
serves a wrapper of the production app instead (``devtools.local_app:app``
adds the local demo routes, ``bench.inject_app:app`` the bench's injection
route); the production app has neither. The command line of uvicorn cannot
name a protocol class, hence this module.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from functions.stream.protocol import HEADER_TIMEOUT_SECONDS, with_header_timeout
from shared.config import number

PRODUCTION_APP = "functions.stream.main:app"
# Cloud Run sends SIGKILL 10 s after SIGTERM. The streams are told at the signal
# and end at once; this bounds what still runs then (a slow client's last write),
# and the lifespan's clean-up has SHUTDOWN_BUDGET_SECONDS (service.py) after it.
GRACEFUL_SHUTDOWN_SECONDS = 4
# gRPC's EventEngine client (its default) reads each channel response on a pool
# of its own threads, then hands it to grpc.aio's poller thread, which wakes the
# loop: about 35 us of CPU per channel message on those threads alone, a quarter
# of the process's cost per delivery. Without it (iomgr's epoll1, gRPC's client
# before 1.6x) the poller thread reads the socket itself. It must be in the
# environment before gRPC starts, so before the app (and gRPC) is imported.
GRPC_EXPERIMENTS = "-event_engine_client"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the stream service (SPEC sections 4 and 5)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--app", default=PRODUCTION_APP, help="module:attribute of the ASGI app to serve")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    # Read here, not in StreamSettings: the protocol exists before the app is imported.
    header_timeout = number(os.environ, "HTTP_HEADER_TIMEOUT_SECONDS", HEADER_TIMEOUT_SECONDS, minimum=0.1, maximum=300)
    uvicorn.run(
        args.app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=with_header_timeout(header_timeout),
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # The app configures logging (JSON, token redaction) for uvicorn's loggers too.
        log_config=None,
    )


if __name__ == "__main__":
    main()
