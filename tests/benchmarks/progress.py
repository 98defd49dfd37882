"""Progress lines on stdout, each stamped with the seconds since the benchmark started."""

from __future__ import annotations

import time

_STARTED = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - _STARTED


def log(message: str) -> None:
    print(f"[bench {elapsed():6.1f}s] {message}", flush=True)
