"""Each folder deploy.sh stages starts on its own, the way Google Cloud starts it, and answers.

The processes run from the staged folder with no PYTHONPATH and outside the
repository, so an import that only works from the checkout fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.emulators import free_port
from shared.backends.firestore_store import FirestoreStore
from shared.backends.pubsub_channel import ensure_topics
from shared.config import load_settings
from tests.support import ROOT
from tests.support.emulators import EmulatorPair
from tests.support.events import valid_event
from tests.support.fake_cloud import DeployRun, FakeCloud
from tests.support.processes import ManagedProcess, start_server
from tests.support.pubsub import push_envelope
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        ["bash", str(ROOT / "deploy.sh"), "--stage-only", "--build-dir", str(build), "ingest", "cleanup", "stream"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return build


@pytest.fixture(scope="module")
def deployed_env(first_deploy: tuple[FakeCloud, DeployRun]) -> dict[str, dict[str, str]]:
    """The environment deploy.sh gives each function and the service (read from a stand-in gcloud run)."""
    _, run = first_deploy
    found = {}
    for name in ("notifications-ingest", "notifications-cleanup", "notifications-stream"):
        [call] = [c for c in run.calls if "deploy" in c.argv and name in c.argv]
        pairs = next(a for a in call.argv if a.startswith("--set-env-vars=")).split("=", 1)[1]
        # As on Cloud Run: K_SERVICE makes the settings production ones.
        found[name] = {**dict(p.split("=", 1) for p in pairs.split(",")), "K_SERVICE": name, "K_REVISION": "1"}
    return found


@pytest.fixture
def project(emulators: EmulatorPair) -> Iterator[dict[str, str]]:
    """A private project on the emulators, with the topics deploy.sh would create."""
    name = f"staged-{uuid.uuid4().hex[:8]}"
    settings = load_settings({**os.environ, "GOOGLE_CLOUD_PROJECT": name})
    ensure_topics(name, [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic])
    yield {**emulators.env(), "GOOGLE_CLOUD_PROJECT": name}


def start_in(folder: Path, command: list[str], env: dict[str, str], port: int) -> ManagedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env = {**clean, **env, "PATH": f"{BIN}:{clean.get('PATH', '/usr/bin:/bin')}", "PORT": str(port)}
    return start_server(command, full_env, port, cwd=folder, ready_timeout=60)


def start_function(folder: Path, target: str, env: dict[str, str], signature: str) -> ManagedProcess:
    port = free_port()
    command = [str(BIN / "functions-framework"), "--source", str(folder / "main.py"), "--target", target]
    command += ["--signature-type", signature, "--host", "127.0.0.1", "--port", str(port)]
    return start_in(folder, command, env, port)


def test_staged_ingest_stores_a_pushed_event(
    staged: Path, project: dict[str, str], deployed_env: dict[str, dict[str, str]]
) -> None:
    env = {**deployed_env["notifications-ingest"], **project}
    server = start_function(staged / "ingest", "ingest_content_event", env, "cloudevent")
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{project['GOOGLE_CLOUD_PROJECT']}/topics/content-generation-events"
    try:
        data = json.dumps(valid_event(user_id, title="From the staged folder")).encode()
        body = push_envelope(data, {}, f"m-{uuid.uuid4().hex[:8]}", "projects/p/subscriptions/s")
        response = httpx.post(f"{server.url}/{topic}", json=body, timeout=30)
        assert response.status_code == 200, server.log()[-2000:]
    finally:
        server.stop()
    store = FirestoreStore(project["GOOGLE_CLOUD_PROJECT"])
    try:
        [stored] = store.page(user_id, 10).notifications
        assert stored.title == "From the staged folder"
    finally:
        store.close()


def test_staged_cleanup_answers_json(
    staged: Path, project: dict[str, str], deployed_env: dict[str, dict[str, str]]
) -> None:
    env = {**deployed_env["notifications-cleanup"], **project}
    server = start_function(staged / "cleanup", "cleanup", env, "http")
    try:
        response = httpx.post(f"{server.url}/?budget_seconds=20", timeout=60)
    finally:
        server.stop()
    assert response.status_code == 200, server.log()[-2000:]
    body = response.json()
    assert body["complete"] is True and set(body["removed"]) == {
        "instances",
        "connections",
        "notifications",
        "event_keys",
        "subscriptions",
        "topics",
    }


def test_staged_stream_service_starts_from_its_procfile_and_is_healthy(
    staged: Path, project: dict[str, str], deployed_env: dict[str, dict[str, str]]
) -> None:
    folder = staged / "stream"
    procfile = (folder / "Procfile").read_text()
    web = next(line for line in procfile.splitlines() if line.startswith("web:"))[len("web:") :].strip()
    port = free_port()
    # The secret arrives from Secret Manager as JWT_SECRET (--set-secrets).
    env = {
        **deployed_env["notifications-stream"],
        **project,
        "JWT_SECRET": "a-staged-test-secret-of-enough-length-0123456789",
    }
    server = start_in(folder, ["sh", "-c", f"exec {web}"], env, port)
    try:
        health = wait_for(
            lambda: (
                (r := httpx.get(f"{server.url}/api/v1/notifications/health", timeout=10)).json()["status"] == "healthy"
                and r
            ),
            timeout=60,
            what="the staged stream service to report healthy",
        )
        assert health.status_code == 200
    finally:
        server.stop()


def test_the_procfile_runs_the_command_docs_stream_md_documents(staged: Path) -> None:
    docs = (ROOT / "docs" / "stream.md").read_text()
    block = docs.split("## Starting it", 1)[1].split("\n\n", 2)[1]
    documented = " ".join(block.replace("\\\n", " ").split())
    web = next(line for line in (staged / "stream" / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert " ".join(web[len("web:") :].split()) == documented


# What each deployable must not ship or import: the others' server stacks.
_STREAM_ONLY = ("starlette", "uvicorn", "uvloop", "httptools", "prometheus_client")
_FUNCTIONS_ONLY = ("flask", "functions_framework")
_FORBIDDEN = {"ingest": _STREAM_ONLY, "cleanup": _STREAM_ONLY, "stream": _FUNCTIONS_ONLY}
_ENTRY = {"ingest": "main", "cleanup": "main", "stream": "functions.stream.main"}
_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {forbidden!r}:
            raise ImportError("staged component imported " + name)
        return None
sys.meta_path.insert(0, Block())
import {entry}
print("imported", len(sys.modules))
"""


@pytest.mark.parametrize("name", ["ingest", "cleanup", "stream"])
def test_each_staged_component_imports_without_the_others_packages(
    staged: Path, deployed_env: dict[str, dict[str, str]], name: str
) -> None:
    folder = staged / name
    lines = (folder / "requirements.txt").read_text().lower().replace("-", "_").splitlines()
    pins = {line.split("==")[0].split("[")[0].strip() for line in lines if line.strip()}
    assert {"google_cloud_pubsub", "google_cloud_firestore"} <= pins
    assert not pins & set(_FORBIDDEN[name]), f"{name} ships {pins & set(_FORBIDDEN[name])}"
    assert not (folder / "functions" / ("stream" if name != "stream" else "ingest")).exists()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        **deployed_env[f"notifications-{name}"],
        "JWT_SECRET": "a-staged-test-secret-of-enough-length-0123456789",
    }
    script = _BLOCKER.format(forbidden=set(_FORBIDDEN[name]), entry=_ENTRY[name])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported" in done.stdout


def test_the_import_blocker_would_catch_a_forbidden_import(staged: Path) -> None:
    # The check above must be able to fail: the stream service does need Starlette.
    script = _BLOCKER.format(forbidden={"starlette"}, entry="functions.stream.main")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=staged / "stream",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "staged component imported starlette" in done.stderr
