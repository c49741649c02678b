"""The stream service's side of the kill switch (shared/killswitch.py): refuse new streams while off."""

from __future__ import annotations

from functions.stream.http import ApiError
from shared.killswitch import KillSwitch

# A switched-off system stays off for minutes at least; clients need not knock every few seconds.
RETRY_AFTER_SWITCHED_OFF = "60"


async def refuse_if_switched_off(killswitch: KillSwitch) -> None:
    """Raise the 503 of a refused stream when the operators switched streams off."""
    switches = await killswitch.current_async()
    if switches.streams_enabled:
        return
    message = "notifications are switched off by the operators" + (f": {switches.reason}" if switches.reason else "")
    raise ApiError(503, "notifications_disabled", message, {"Retry-After": RETRY_AFTER_SWITCHED_OFF})
