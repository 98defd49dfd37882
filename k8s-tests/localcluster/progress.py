"""Progress for long steps: what runs, how long it has taken, a heartbeat while it runs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.0f}s] {message}", flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """`title …` then `title: done in N s` (or `failed after N s`)."""
    began = time.monotonic()
    say(f"{title} …")
    try:
        yield
    except BaseException:
        say(f"{title}: failed after {time.monotonic() - began:.0f} s")
        raise
    say(f"{title}: done in {time.monotonic() - began:.0f} s")


@contextmanager
def heartbeat(title: str, every: float = 30.0) -> Iterator[None]:
    """A line every `every` seconds while the body runs (builds of many minutes stay visible)."""
    stop = threading.Event()
    began = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            say(f"{title}: still running, {time.monotonic() - began:.0f} s")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.stdout.flush()
