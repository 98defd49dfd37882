"""Queues, task routes and the default worker-pool layout: the one source of these facts.

Settings build ``task_routes`` from here, the Helm chart's default ``workers`` map mirrors
``WORKER_POOLS`` and a chart test fails on any drift between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

HIGH_PRIORITY = "high_priority"
DEFAULT = "default"
LOW_PRIORITY = "low_priority"

#: Every queue a worker consumes, most urgent first.
QUEUES: tuple[str, ...] = (HIGH_PRIORITY, DEFAULT, LOW_PRIORITY)

#: A task nobody routed lands here (``task_default_queue``), never on Celery's unconsumed ``celery``.
DEFAULT_QUEUE = DEFAULT

TASK_MODULE = "apps.main.tasks"


def task_name(short: str) -> str:
    """The registered Celery name of one of our tasks."""
    return f"{TASK_MODULE}.{short}"


#: The six explicit routes; ``health_check`` is deliberately unrouted and so lands on DEFAULT_QUEUE.
TASK_QUEUES: dict[str, str] = {
    "send_notification": HIGH_PRIORITY,
    "process_user_action": HIGH_PRIORITY,
    "update_analytics": DEFAULT,
    "generate_reports": LOW_PRIORITY,
    "cleanup_temp_files": LOW_PRIORITY,
    "backup_data": LOW_PRIORITY,
}

#: Every task of the app, routed or not.
TASK_NAMES: tuple[str, ...] = (
    "send_notification",
    "process_user_action",
    "update_analytics",
    "cleanup_temp_files",
    "health_check",
    "generate_reports",
    "backup_data",
)

TASK_ROUTES: dict[str, dict[str, str]] = {
    task_name(short): {"queue": queue} for short, queue in TASK_QUEUES.items()
}


def queue_for(short: str) -> str:
    """The queue a task of ours is sent to."""
    return TASK_QUEUES.get(short, DEFAULT_QUEUE)


@dataclass(frozen=True)
class WorkerPool:
    """One worker Deployment in the chart, one worker process in the local stack."""

    queues: tuple[str, ...]
    concurrency: int
    #: Messages reserved per pool process (``--prefetch-multiplier``). Above 1 a process never waits
    #: for the broker between short tasks, but a reserved message waits behind the ones before it, and
    #: the visibility timeout grows with it (settings: ``MIN_VISIBILITY_TIMEOUT``). docs/benchmarks.md.
    prefetch_multiplier: int = 1
    #: Task events (``--task-events``) for Flower: what they cost is in docs/benchmarks.md.
    task_events: bool = True


#: Pool name (a DNS label: the chart names Deployments after it) -> pool.
WORKER_POOLS: dict[str, WorkerPool] = {
    "high-priority": WorkerPool(queues=(HIGH_PRIORITY,), concurrency=2),
    "default": WorkerPool(queues=(DEFAULT,), concurrency=4),
    "low-priority": WorkerPool(queues=(LOW_PRIORITY,), concurrency=2),
}

#: The largest prefetch multiplier of the default pools; the chart passes its own pools' largest.
MAX_PREFETCH_MULTIPLIER = max(pool.prefetch_multiplier for pool in WORKER_POOLS.values())
