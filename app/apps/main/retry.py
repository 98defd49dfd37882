"""Retry policy: which errors are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random
import smtplib
import socket
from dataclasses import dataclass

import kombu.exceptions
import redis.exceptions
import requests
from django.conf import settings
from django.db import InterfaceError, OperationalError


class TransientError(Exception):
    """A failure that may go away by itself (a 503, a rate limit): retry with backoff."""


class PermanentError(Exception):
    """A failure that no retry can fix (bad input, a 4xx): fail at once, dead-letter."""


#: Network, broker and database hiccups. Anything else is a bug or bad input and fails at once.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    requests.ConnectionError,
    requests.Timeout,
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_EXCEPTIONS) and not isinstance(exc, PermanentError)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_delay: float
    max_delay: float

    def delay_bounds(self, retries_done: int) -> tuple[float, float]:
        ceiling = min(self.max_delay, self.base_delay * (2**retries_done))
        return ceiling / 2, ceiling

    def delay(self, retries_done: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt: exponential, capped, with "equal jitter".

        The ceiling doubles per retry (base, 2·base, 4·base …) up to ``max_delay``; the delay is
        drawn from [ceiling/2, ceiling] so retries of many failed tasks spread out (no thundering
        herd) yet never come back sooner than half the intended backoff.
        """
        low, high = self.delay_bounds(retries_done)
        return (rng or random).uniform(low, high)


def policy_for(short_name: str) -> RetryPolicy:
    """The task's policy from settings.RETRY_POLICIES, else Celery's defaults."""
    configured = getattr(settings, "RETRY_POLICIES", {}).get(short_name, {})
    return RetryPolicy(
        max_retries=configured.get("max_retries", settings.CELERY_TASK_DEFAULT_MAX_RETRIES),
        base_delay=configured.get("base_delay", settings.CELERY_TASK_DEFAULT_RETRY_DELAY),
        max_delay=configured.get("max_delay", settings.RETRY_BACKOFF_MAX),
    )
