"""Session fixtures: the real Pub/Sub and Firestore emulators (started by the tests), the ingest
function behind a push subscription, and the markers that say which tests need them.

The emulator fixtures are declared once for the whole suite, so every folder shares
one ingest server and one push subscription: a second subscription on the content
topic would deliver every event twice.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator

import pytest

from devtools import emulators as emulator_tools
from functions.stream.config import StreamSettings, load_stream_settings
from shared.backends.pubsub_channel import ensure_topics
from shared.config import reset_settings
from tests.support import missing
from tests.support.emulators import PROJECT, EmulatorPair, require_emulators
from tests.support.events import new_user as unique_user
from tests.support.fuzzing import register_profiles
from tests.support.processes import ManagedProcess, start_function
from tests.support.pubsub import InstanceTap, PullSubscription

# The tests are a development run: the only mode allowed the public development JWT
# secret (tests that check its refusal pass their own environment).
os.environ.setdefault("NOTIFICATIONS_LOCAL_MODE", "true")
# Before pytest loads the Hypothesis profile that --hypothesis-profile names (make test-fast: quick).
register_profiles()

# A fixture that needs infrastructure, and the marker of every test that uses it, directly
# or through other fixtures, so that -m "not emulator and not browser and not gcloud" leaves them all out.
MARKER_OF_FIXTURE = {"emulators_installed": "emulator", "chromium": "browser", "gcloud_sdk": "gcloud"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))  # the transitive closure of what it requests
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in used:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """A test without the ``emulator`` marker that starts an emulator anyway fails, instead of slipping into
    ``make test-fast``: it must reach the emulators through ``emulators_installed``."""
    if item.get_closest_marker("emulator") is not None:
        return (yield)

    def undeclared(*args: object, **kwargs: object) -> emulator_tools.Emulator:
        raise AssertionError(f"{item.nodeid} starts an emulator without the emulators_installed fixture")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(emulator_tools, "start", undeclared)
        return (yield)


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """A test that changes the process environment and leaves it changed fails: a leaked
    ``PUBSUB_EMULATOR_HOST`` once pointed every later test at an emulator already stopped."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    after.pop("PYTEST_CURRENT_TEST", None)  # pytest's own, changed on every phase
    before.pop("PYTEST_CURRENT_TEST", None)
    if after != before:
        for key in after.keys() - before.keys():
            os.environ.pop(key, None)
        os.environ.update(before)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        pytest.fail(f"the test left the environment changed ({', '.join(changed)}): use monkeypatch.setenv")


@pytest.fixture(scope="session")
def gcloud_sdk() -> str:
    """The installed Google Cloud SDK's ``gcloud`` (else skip; under CI, fail)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        missing("needs the Google Cloud SDK (google-cloud-cli)")
    return gcloud


@pytest.fixture(scope="session")
def emulators_installed() -> None:
    """Both emulators can be started on this machine (else skip; under CI, fail)."""
    require_emulators()


@pytest.fixture(scope="session")
def emulators_session(emulators_installed: None) -> Iterator[EmulatorPair]:
    pubsub = emulator_tools.start("pubsub", PROJECT)
    try:
        firestore = emulator_tools.start("firestore", PROJECT)
    except BaseException:
        pubsub.stop()
        raise
    pair = EmulatorPair(pubsub, firestore)
    saved = {k: os.environ.get(k) for k in pair.env()}
    os.environ.update(pair.env())
    reset_settings()
    try:
        yield pair
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()
        firestore.stop()
        pubsub.stop()


@pytest.fixture
def emulators(emulators_session: EmulatorPair) -> EmulatorPair:
    """Both emulators running, with their hosts in the environment."""
    return emulators_session


@pytest.fixture
def private_pubsub(emulators_installed: None) -> Iterator[emulator_tools.Emulator]:
    """A Pub/Sub emulator of this test's own: killing it disturbs no other test."""
    emulator = emulator_tools.start("pubsub", PROJECT)
    yield emulator
    emulator.stop()


@pytest.fixture
def private_firestore(emulators_installed: None) -> Iterator[emulator_tools.Emulator]:
    """A Firestore emulator of this test's own: stopping it disturbs no other test."""
    emulator = emulator_tools.start("firestore", PROJECT)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def settings(emulators_session: EmulatorPair) -> StreamSettings:
    settings = load_stream_settings()
    ensure_topics(
        settings.project_id,
        [settings.content_events_topic, settings.dead_letter_topic, settings.notifications_topic],
    )
    return settings


@pytest.fixture(scope="session")
def ingest_server(emulators_session: EmulatorPair, settings: StreamSettings) -> Iterator[ManagedProcess]:
    server = start_function(
        "functions/ingest/main.py", "ingest_content_event", {**emulators_session.env(), "BACKEND_TIMEOUT_SECONDS": "5"}
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def push_subscription(settings: StreamSettings, ingest_server: ManagedProcess) -> Iterator[PullSubscription]:
    """The trigger: content topic -> push -> functions-framework, as Eventarc wires it in the cloud."""
    endpoint = f"{ingest_server.url}/projects/{settings.project_id}/topics/{settings.content_events_topic}"
    subscription = PullSubscription(settings.project_id, settings.content_events_topic, push_endpoint=endpoint)
    yield subscription
    subscription.delete()


@pytest.fixture
def channel_tap(settings: StreamSettings, user_id: str) -> Iterator[PullSubscription]:
    """Everything routed on the live channel from now on to a stream instance holding ``user_id``'s stream."""
    subscription = InstanceTap(settings.project_id, [user_id])
    yield subscription
    subscription.delete()


@pytest.fixture
def broadcast_tap(settings: StreamSettings) -> Iterator[PullSubscription]:
    """Everything published to every stream instance (broadcasts, and the fallback when routing cannot)."""
    subscription = PullSubscription(settings.project_id, settings.notifications_topic)
    yield subscription
    subscription.delete()


@pytest.fixture
def dead_letter_tap(settings: StreamSettings) -> Iterator[PullSubscription]:
    subscription = PullSubscription(settings.project_id, settings.dead_letter_topic)
    yield subscription
    subscription.delete()


@pytest.fixture
def user_id() -> str:
    return unique_user()


@pytest.fixture
def new_user() -> Callable[[], str]:
    """A maker of user ids no other test uses."""
    return unique_user
