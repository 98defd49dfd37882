"""Wall-clock waits of the tests scale with one setting: TEST_TIMEOUT_SCALE (default 1.0).

A loaded or slow machine sets e.g. TEST_TIMEOUT_SCALE=3; the waits are for conditions, so a larger
scale only makes a failing run take longer, never a passing one.
"""

from __future__ import annotations

import os


def scale() -> float:
    return float(os.environ.get("TEST_TIMEOUT_SCALE") or 1.0)


def scaled(seconds: float) -> float:
    return seconds * scale()
