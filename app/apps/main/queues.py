"""Queues, task routes, the tasks with encrypted or always-compressed payloads and the default worker-pool
layout: the one source of these facts.

Settings build ``task_routes`` from here, the Helm chart's default ``workers`` map mirrors
``WORKER_POOLS`` and a chart test fails on any drift between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.main.payload_encryption import ROUTE_OPTIONS as ENCRYPTED_ROUTE_OPTIONS

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

#: Tasks whose arguments and results are encrypted (apps.main.payload_encryption): per task, opt-in. Their
#: messages, result rows and dead letters hold no clear argument or result; task name, id and queue stay clear.
ENCRYPTED_TASKS: frozenset[str] = frozenset({"send_notification"})

#: Tasks whose message bodies are compressed whatever their size (apps.main.large_payloads): per task, opt-in.
#: Every other task's body is compressed only above TASK_COMPRESSION_THRESHOLD_BYTES. process_user_action
#: carries a client's free-form ``payload``: JSON that compresses well, often below the threshold.
COMPRESSED_TASKS: frozenset[str] = frozenset({"process_user_action"})


def queue_for(short: str) -> str:
    """The queue a task of ours is sent to."""
    return TASK_QUEUES.get(short, DEFAULT_QUEUE)


def _ours(name: str | None) -> str | None:
    """The short name of one of our tasks' registered names (``apps.main.tasks.…``), else None."""
    prefix = f"{TASK_MODULE}."
    return name[len(prefix):] if name and name.startswith(prefix) else None


def is_encrypted(name: str | None) -> bool:
    """Whether the task of this registered name (``apps.main.tasks.…``) has encrypted payloads."""
    return _ours(name) in ENCRYPTED_TASKS


def is_compressed(name: str | None) -> bool:
    """Whether the task of this registered name always has its message body compressed."""
    return _ours(name) in COMPRESSED_TASKS


#: Every routed or encrypted task: its queue, and for an encrypted one the serializer and hidden argsrepr —
#: so that a sender without the task registered (send_task by name) encrypts it too.
TASK_ROUTES: dict[str, dict[str, str]] = {
    task_name(short): {"queue": queue_for(short), **(ENCRYPTED_ROUTE_OPTIONS if short in ENCRYPTED_TASKS else {})}
    for short in TASK_NAMES if short in TASK_QUEUES or short in ENCRYPTED_TASKS
}


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
