"""Poll a condition until it holds, or fail with what was waited for, for how long and what was seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError so pytest reports it as a test failure)."""


def _describe(value: object, limit: int = 500) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    description: str,
    interval: float = 1.0,
    retry_on: tuple[type[BaseException], ...] = (),
    diagnostics: Callable[[], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``condition`` until it returns a truthy value and return that value.

    An exception of ``retry_on`` counts as "not yet" (an API server that is still starting, a
    port-forward that is being re-established); any other exception propagates at once, so a
    condition can fail fast (e.g. a task that reached FAILURE). On timeout the message names the
    description, the last result, the last retried error and the output of ``diagnostics``.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    deadline = clock() + timeout
    attempts = 0
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        attempts += 1
        try:
            value = condition()
        except retry_on as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - clock()
        if remaining <= 0:
            break
        pause(min(interval, remaining))

    message = (
        f"timed out after {timeout:g}s waiting for {description} ({attempts} checks); "
        f"last result: {_describe(last_value)}"
    )
    if last_error is not None:
        message += f"; last error: {type(last_error).__name__}: {last_error}"
    if diagnostics is not None:
        try:
            message += "\n" + diagnostics()
        except Exception as exc:  # the timeout is the news; a broken dump must not hide it
            message += f"\n(collecting diagnostics failed: {type(exc).__name__}: {exc})"
    raise WaitTimeout(message)
