"""Tasks of the benchmark only, loaded into the project's workers with ``-I tests.benchmarks.bench_tasks``.

They are built like the project's tasks (``ReliableTask`` base: its request guard, retries, dead letters)
so a worker runs them along the same path as its own. With ``BENCH_DISABLE_METRICS=1`` this module, imported
in the worker's main process before the pool forks, disconnects every signal receiver of
``apps.main.metrics.worker``: a run with and one without them differ by exactly what the worker metrics
cost. ``apps.main.task_timing`` stays: the result backend's start time and performance.log read its clock.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis
from celery import shared_task
from celery import signals as celery_signals
from celery.utils.dispatch import Signal
from django.db import connection

from apps.main.base_task import ReliableTask
from tests.benchmarks.task_names import DISABLE_METRICS, NOOP, PAYLOAD_SINK, RECORD_START, REPORT_QUERY, STARTS_KEY

logger = logging.getLogger(__name__)

#: dispatch_uid prefix of the receivers that make up the worker metrics.
METRICS_RECEIVERS = "apps.main.metrics."


@shared_task(bind=True, base=ReliableTask, name=NOOP, ignore_result=True)
def noop(self: ReliableTask) -> None:
    """(c) Does nothing: what remains is the cost of the worker's configuration per task."""


@shared_task(bind=True, base=ReliableTask, name=PAYLOAD_SINK, ignore_result=True)
def payload_sink(self: ReliableTask, **kwargs: Any) -> None:
    """(h) Takes send_notification's arguments and does nothing: what remains is the cost of their message,
    plain or encrypted (the sender chooses the serializer)."""


@shared_task(bind=True, base=ReliableTask, name=REPORT_QUERY)
def report_query(self: ReliableTask, seconds: float = 0.05) -> None:
    """(f) The low-priority load: a query that keeps its pool process busy, like a report's."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


_redis: dict[int, redis.Redis] = {}


@shared_task(bind=True, base=ReliableTask, name=RECORD_START)
def record_start(self: ReliableTask, seq: int, sent_at: float) -> None:
    """(f) The high-priority probe: notes when its body began, in the pool process that runs it."""
    started = time.time()
    client = _redis.get(os.getpid())
    if client is None:  # one client per pool process, made after the fork
        client = _redis[os.getpid()] = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.rpush(STARTS_KEY, f"{seq} {sent_at!r} {started!r}")


def disconnect_metrics() -> list[str]:
    """Disconnect the worker metrics' receivers from Celery's signals and ``task_timed``; returns their ids."""
    import apps.main.metrics.worker  # noqa: F401 — connected on import: disconnect after, never before
    from apps.main.task_timing import task_timed

    removed: list[str] = []
    for signal in vars(celery_signals).values():
        if not isinstance(signal, Signal):
            continue
        for (uid, _sender), _receiver in list(signal.receivers):
            if isinstance(uid, str) and uid.startswith(METRICS_RECEIVERS):
                signal.disconnect(dispatch_uid=uid)
                removed.append(uid)
    if task_timed.disconnect(dispatch_uid="apps.main.metrics.runtime"):
        removed.append("apps.main.metrics.runtime")
    return removed


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


if _flag(os.environ.get(DISABLE_METRICS, "")):
    logger.warning("bench: worker metrics disconnected: %s", ", ".join(disconnect_metrics()))
