"""functions/stream/serve.py: the gRPC tuning it puts in the environment before gRPC starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import uvicorn

from functions.stream import serve
from tests.support import ROOT


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_main_tunes_grpc_unless_the_environment_already_does(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []
    environment: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", environment)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.append(environment.get("GRPC_EXPERIMENTS")))
    serve.main([])
    environment["GRPC_EXPERIMENTS"] = "-event_engine_listener"
    serve.main([])
    assert seen == [serve.GRPC_EXPERIMENTS, "-event_engine_listener"]


def test_importing_serve_does_not_start_grpc() -> None:
    # gRPC reads GRPC_EXPERIMENTS once, when it starts: main() must set it first.
    done = _python("import sys, functions.stream.serve; sys.exit(int('grpc' in sys.modules))", dict(os.environ))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("experiments", "known"), [(serve.GRPC_EXPERIMENTS, True), ("-no_such_experiment", False)], ids=["ours", "unknown"]
)
def test_the_installed_grpc_knows_the_experiment(experiments: str, known: bool) -> None:
    # A grpcio upgrade that retires it only logs an error (and ignores it): this fails instead.
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
    done = _python("import grpc; grpc.insecure_channel('localhost:1').close()", env)
    assert done.returncode == 0, done.stderr
    assert ("Unknown experiment" not in done.stderr) is known, done.stderr
