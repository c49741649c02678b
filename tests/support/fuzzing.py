"""How many examples the property tests run: all of them by default, a tenth in the quick loop.

Each property test pins its count with ``@settings(max_examples=examples(N))``. A count
given to ``@settings`` overrides every Hypothesis profile, so ``examples`` applies the
profile instead: under Hypothesis' default profile (``make test``, CI, a bare ``pytest``)
it is exactly ``N``; under ``--hypothesis-profile=quick`` (``make test-fast``) a tenth
of it. The example database still replays every failure found before, whatever the count.
"""

from __future__ import annotations

from hypothesis import settings

QUICK_PROFILE = "quick"


def _default_examples() -> int:
    return settings.get_profile("default").max_examples


def register_profiles() -> None:
    """Called by tests/conftest.py, before pytest loads the profile ``--hypothesis-profile`` names."""
    settings.register_profile(QUICK_PROFILE, max_examples=max(1, _default_examples() // 10))


def examples(full: int) -> int:
    """``full`` scaled by the loaded profile's share of Hypothesis' default example count (at least 1).

    Called when a test module is imported, which is after pytest has loaded the profile.
    """
    return max(1, full * settings().max_examples // _default_examples())
