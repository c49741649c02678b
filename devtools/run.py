"""``make run``: the whole system on this machine, stopped by Ctrl-C (SPEC section 8).

Backends, in this order of preference:

1. the emulators named by PUBSUB_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST when they are set;
2. emulators started here, from gcloud or the jars named by PUBSUB_EMULATOR_JAR / FIRESTORE_EMULATOR_JAR;
3. the embedded in-memory backends (NOTIFICATIONS_BACKEND=memory, or when no emulator is installed):
   then the ingest path runs inside the stream service's process and the demo form is the only way in.

With emulators it creates the topics and wires the ingest function to CONTENT_EVENTS_TOPIC the way
Google Cloud does (a push subscription to a functions-framework server running functions/ingest/main.py),
then serves the stream service with the development routes of ``devtools.local_app`` on PORT (default
8080) and prints the demo URL and a development token. Every child runs in its own process group, and
SIGINT/SIGTERM stop them all.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from devtools import emulators
from devtools.emulators import ENV_HOST, Emulator, free_port
from functions.stream.config import StreamSettings, load_stream_settings
from shared.config import Settings
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PUSH_SUBSCRIPTION = "local-ingest-push"
DEMO_USER = "demo-user"
logger = logging.getLogger(__name__)


class RunError(RuntimeError):
    """Something the person running ``make run`` must fix; the message says what."""


def say(line: str = "") -> None:
    # The local run talks to a person on a terminal, not to Cloud Logging.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Child:
    """A server started by the local run, in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever the leader left behind in its group goes too.
        _signal_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self.log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def spawn(name: str, command: list[str], env: Mapping[str, str]) -> Child:
    fd, log_name = tempfile.mkstemp(prefix=f"notifications-{name}-", suffix=".log")
    log = os.fdopen(fd, "wb")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Child(name, process, Path(log_name), log)


def wait_http(child: Child, url: str, timeout: float, stop: threading.Event) -> None:
    """Wait until ``url`` answers any HTTP status (the server is up), or fail with the child's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if not child.alive():
            raise RunError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own http:// URL
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            stop.wait(0.2)
    if not stop.is_set():
        raise RunError(f"{child.name} did not answer {url} within {timeout:.0f} s:\n{child.log_tail()}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Backends:
    """What the run uses: a description for the person, and the environment of the children."""

    description: str
    env: dict[str, str]
    memory: bool
    started: list[Emulator]


def choose_backends(env: Mapping[str, str], project: str) -> Backends:
    if env.get("NOTIFICATIONS_BACKEND", "").strip().lower() == "memory":
        return Backends("embedded in-memory backends (NOTIFICATIONS_BACKEND=memory)", {}, True, [])
    given = {kind: env.get(ENV_HOST[kind], "").strip() for kind in ("pubsub", "firestore")}
    installed = {kind: emulators.available(kind) for kind in ("pubsub", "firestore")}
    if not any(given.values()) and not all(installed.values()):
        return Backends(
            "embedded in-memory backends (no Pub/Sub and Firestore emulators installed: install gcloud's "
            "emulator components or set PUBSUB_EMULATOR_JAR and FIRESTORE_EMULATOR_JAR to use them)",
            {"NOTIFICATIONS_BACKEND": "memory"},
            True,
            [],
        )
    missing = [ENV_HOST[kind] for kind in given if not given[kind] and not installed[kind]]
    if missing:
        raise RunError(f"{', '.join(missing)} is not set and that emulator is not installed")
    return Backends("", {}, False, [])


def start_emulators(chosen: Backends, env: Mapping[str, str], project: str) -> None:
    parts = []
    for kind in ("pubsub", "firestore"):
        host = env.get(ENV_HOST[kind], "").strip()
        if host:
            parts.append(f"{kind} emulator at {host} (from {ENV_HOST[kind]})")
        else:
            say(f"starting the {kind} emulator ...")
            emulator = emulators.start(kind, project)
            chosen.started.append(emulator)
            host = emulator.address
            parts.append(f"{kind} emulator started at {host}")
        chosen.env[ENV_HOST[kind]] = host
    chosen.description = "; ".join(parts)


def wire_ingest(settings: Settings, endpoint: str) -> None:
    """Topics, and the push subscription that triggers the ingest function (what Eventarc sets up)."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from shared.backends.pubsub_channel import ensure_topics

    ensure_topics(
        settings.project_id,
        [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic],
    )
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(settings.project_id, PUSH_SUBSCRIPTION)
    try:
        subscriber.create_subscription(
            request={
                "name": path,
                "topic": f"projects/{settings.project_id}/topics/{settings.content_events_topic}",
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": 60,
            }
        )
    except gexc.AlreadyExists:
        # Left by an earlier run on the same emulator: point it at this run's ingest server.
        subscriber.modify_push_config(request={"subscription": path, "push_config": {"push_endpoint": endpoint}})
    finally:
        subscriber.close()


def unwire_ingest(settings: Settings) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.delete_subscription(
            request={"subscription": subscriber.subscription_path(settings.project_id, PUSH_SUBSCRIPTION)},
            timeout=5,
        )
    except (gexc.GoogleAPICallError, gexc.RetryError):
        pass
    finally:
        subscriber.close()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """The Google clients of this process read the emulator hosts from the environment."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def run(port: int, user: str, stop: threading.Event) -> int:
    # A development run: the only mode that may use the public development JWT secret.
    env = {**os.environ, "NOTIFICATIONS_LOCAL_MODE": os.environ.get("NOTIFICATIONS_LOCAL_MODE", "true")}
    try:
        settings = load_stream_settings(env)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    if not port_free(port):
        raise RunError(f"port {port} is in use: stop what holds it or set PORT")
    chosen = choose_backends(env, settings.project_id)
    children: list[Child] = []
    wired = False
    try:
        if not chosen.memory:
            start_emulators(chosen, env, settings.project_id)
        child_env = {
            **env,
            **chosen.env,
            "GOOGLE_CLOUD_PROJECT": settings.project_id,
            "DEMO_PAGE": env.get("DEMO_PAGE", "true"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        if not chosen.memory:
            ingest_port = free_port()
            ingest = spawn(
                "ingest",
                [
                    sys.executable,
                    "-m",
                    "functions_framework",
                    "--source",
                    str(ROOT / "functions/ingest/main.py"),
                    "--target",
                    "ingest_content_event",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ingest_port),
                ],
                child_env,
            )
            children.append(ingest)
            wait_http(ingest, f"http://127.0.0.1:{ingest_port}/", 60, stop)
            with _environment(chosen.env):
                settings = load_stream_settings(child_env)
                wired = True
                wire_ingest(
                    settings,
                    f"http://127.0.0.1:{ingest_port}/projects/{settings.project_id}/topics/"
                    f"{settings.content_events_topic}",
                )
        stream = spawn(
            "stream",
            [sys.executable, "-m", "functions.stream.serve", "--app", "devtools.local_app:app", *_on(port)],
            child_env,
        )
        children.append(stream)
        base = f"http://127.0.0.1:{port}"
        wait_http(stream, f"{base}/api/v1/notifications/health", 60, stop)
        if stop.is_set():
            return 0
        _banner(base, user, settings, chosen, child_env, children)
        while not stop.wait(0.5):
            for child in children:
                if not child.alive():
                    raise RunError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        say("stopping ...")
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        if wired and not chosen.started:
            with _environment(chosen.env):
                unwire_ingest(settings)
        for emulator in reversed(chosen.started):
            emulator.stop()
        for child in children:
            logger.debug("%s log: %s", child.name, child.log_path)


def _on(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


def _banner(
    base: str, user: str, settings: StreamSettings, chosen: Backends, env: Mapping[str, str], children: list[Child]
) -> None:
    from shared.tokens import mint_token

    token = mint_token(user, settings, ttl_seconds=3600)
    say(f"backends: {chosen.description}")
    say(f"demo URL: {base}/demo?user={user}")
    say(f"token: {token}")
    say(f"  (user {user}, valid 1 h; another user: {base}/demo/token?user=NAME)")
    say(f'stream: curl -N "{base}/api/v1/notifications/stream?token=$TOKEN"')
    if chosen.memory:
        say("publish: use the form on the demo page (embedded backends live inside the stream service)")
    else:
        say(
            f"publish as a worker: PUBSUB_EMULATOR_HOST={env['PUBSUB_EMULATOR_HOST']} "
            f"GOOGLE_CLOUD_PROJECT={settings.project_id} .venv/bin/python -m devtools.cli publish --user {user} "
            "--type content_generation.progress --request req_1 --progress 50"
        )
    say(f"logs: {', '.join(f'{child.name} {child.log_path}' for child in children)}")
    say("Ctrl-C stops everything.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--user", default=DEMO_USER, help="user of the printed token and demo URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raw_port = os.environ.get("PORT", "").strip() or "8080"
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        say(f"error: PORT must be a TCP port number, got {raw_port!r}")
        return 2
    stop = _stop_signals()
    try:
        return run(int(raw_port), args.user, stop)
    except (RunError, emulators.EmulatorUnavailable) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
