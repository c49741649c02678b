"""Fault tests reuse the emulator fixtures (settings, ingest server, taps)."""

from tests.emulator.conftest import (  # noqa: F401 - fixtures re-exported for this folder
    channel_tap,
    dead_letter_tap,
    ingest_server,
    push_subscription,
    settings,
    user_id,
)
