"""The emulators' JVM options: the Firestore emulator's compiles with C1 only unless EMULATOR_JAVA_OPTIONS
says otherwise, and the JVM gets them."""

from __future__ import annotations

import pytest

from devtools import emulators as emulator_tools
from tests.support.emulators import EmulatorPair


def test_firestore_compiles_with_c1_only_and_pubsub_keeps_the_jvm_defaults() -> None:
    assert emulator_tools.java_options("firestore", {}) == "-XX:TieredStopAtLevel=1"
    assert emulator_tools._process_env("firestore", {"PATH": "/bin"})["JAVA_TOOL_OPTIONS"] == "-XX:TieredStopAtLevel=1"
    assert emulator_tools.java_options("pubsub", {}) == ""
    assert "JAVA_TOOL_OPTIONS" not in emulator_tools._process_env("pubsub", {"PATH": "/bin"})


def test_the_variable_sets_both_and_empty_leaves_the_jvm_defaults() -> None:
    assert emulator_tools.java_options("pubsub", {"EMULATOR_JAVA_OPTIONS": "-Xmx1g"}) == "-Xmx1g"
    env = emulator_tools._process_env("firestore", {"EMULATOR_JAVA_OPTIONS": " "})
    assert emulator_tools.java_options("firestore", env) == ""
    assert "JAVA_TOOL_OPTIONS" not in env


def test_options_already_in_java_tool_options_come_last_so_they_win() -> None:
    env = emulator_tools._process_env("firestore", {"EMULATOR_JAVA_OPTIONS": "-Xmx1g", "JAVA_TOOL_OPTIONS": "-Xmx2g"})
    assert env["JAVA_TOOL_OPTIONS"] == "-Xmx1g -Xmx2g"


def test_the_rest_of_the_environment_is_passed_on() -> None:
    env = emulator_tools._process_env("pubsub", {"PATH": "/usr/bin", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"})
    assert env["PATH"] == "/usr/bin"
    assert env["CLOUDSDK_CORE_DISABLE_PROMPTS"] == "1"


@pytest.mark.parametrize("kind", ["firestore", "pubsub"])
def test_the_running_emulator_jvm_got_its_options(emulators: EmulatorPair, kind: emulator_tools.Kind) -> None:
    emulator = emulators.firestore if kind == "firestore" else emulators.pubsub
    # The JVM says so on its stderr, which goes to the emulator's log, when it starts.
    log = emulator.log_tail(lines=1_000_000)
    options = emulator_tools.java_options(kind)
    if options:
        assert f"Picked up JAVA_TOOL_OPTIONS: {options}" in log
    else:
        assert "Picked up JAVA_TOOL_OPTIONS: -XX:TieredStopAtLevel=1" not in log
