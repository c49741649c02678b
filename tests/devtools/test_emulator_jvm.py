"""The emulators' JVM options: C1 only unless EMULATOR_JAVA_OPTIONS says otherwise, and the JVM gets them."""

from __future__ import annotations

import pytest

from devtools import emulators as emulator_tools
from tests.support.emulators import EmulatorPair


def test_c1_only_by_default() -> None:
    assert emulator_tools.java_options({}) == "-XX:TieredStopAtLevel=1"
    assert emulator_tools._process_env({"PATH": "/bin"})["JAVA_TOOL_OPTIONS"] == "-XX:TieredStopAtLevel=1"


def test_empty_options_leave_the_jvm_defaults() -> None:
    env = emulator_tools._process_env({"EMULATOR_JAVA_OPTIONS": " "})
    assert emulator_tools.java_options(env) == ""
    assert "JAVA_TOOL_OPTIONS" not in env


def test_options_already_in_java_tool_options_come_last_so_they_win() -> None:
    env = emulator_tools._process_env({"EMULATOR_JAVA_OPTIONS": "-Xmx1g", "JAVA_TOOL_OPTIONS": "-Xmx2g"})
    assert env["JAVA_TOOL_OPTIONS"] == "-Xmx1g -Xmx2g"


def test_the_rest_of_the_environment_is_passed_on() -> None:
    env = emulator_tools._process_env({"PATH": "/usr/bin", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"})
    assert env["PATH"] == "/usr/bin"
    assert env["CLOUDSDK_CORE_DISABLE_PROMPTS"] == "1"


@pytest.mark.parametrize("kind", ["firestore", "pubsub"])
def test_the_running_emulator_jvm_picked_the_options_up(emulators: EmulatorPair, kind: str) -> None:
    options = emulator_tools.java_options()
    if not options:
        pytest.skip("EMULATOR_JAVA_OPTIONS is empty here: the JVM runs with its defaults")
    # The JVM says so on its stderr, which goes to the emulator's log, when it starts.
    emulator = emulators.firestore if kind == "firestore" else emulators.pubsub
    assert f"Picked up JAVA_TOOL_OPTIONS: {options}" in emulator.log_tail(lines=1_000_000)
