"""Valid API arguments for each of the seven tasks, and the burst of real tasks the disruptive tests send."""

from __future__ import annotations

import os
import uuid
from typing import Any

from apps.main.queues import TASK_NAMES


def arguments_for(name: str) -> dict[str, Any]:
    """Arguments that make ``name`` succeed on a fresh release (no mail server, no webhook target)."""
    samples: dict[str, dict[str, Any]] = {
        "send_notification": {"channel": "in_app", "recipient": "k8s-tests", "message": "hello from k8s-tests"},
        # A fresh action id each time: the task is idempotent per id.
        "process_user_action": {"action_id": uuid.uuid4().hex, "user_id": "k8s-tests", "action": "login"},
        "update_analytics": {"window_minutes": 5},
        "cleanup_temp_files": {},
        "health_check": {},
        "generate_reports": {"report_type": "system", "hours": 1},
        "backup_data": {"keep": 3},
    }
    missing = set(TASK_NAMES) - set(samples)
    if missing:
        raise AssertionError(f"k8s-tests have no sample arguments for {sorted(missing)}")
    return samples[name]



#: The burst task: a real, fast task (one database statement, a few milliseconds) on the high_priority queue.
#: Each submission gets a fresh ``action_id``; the task is idempotent per id, so a delivery that is
#: repeated after a lost worker (the write done, the ack not) still ends in SUCCESS without a duplicate.
BURST_TASK = "process_user_action"

#: Tasks per burst. A high-priority pod (concurrency 2) drains ``process_user_action`` about as fast as the
#: API accepts it (hundreds per second), so the disruptive tests submit in the background
#: (``bursts.BurstInFlight``) and, where they need KEDA to act, keep submitting (a few bursts at most) until
#: it has: a fixed burst can be over before KEDA's next poll (5 s) or the HPA's next sync (15 s).
BURST_SIZE = 2000
#: Overrides BURST_SIZE, e.g. on a faster machine where the burst drains before the disruption.
BURST_ENV = "K8S_TESTS_BURST"
#: The slowest drain rate the waits allow for (tasks/s of the whole pool), so a slow CI node
#: gets time, but a stuck queue still fails within minutes.
SLOWEST_DRAIN_RATE = 10


def burst_size() -> int:
    """BURST_SIZE, or $K8S_TESTS_BURST (a positive integer) when set."""
    raw = os.environ.get(BURST_ENV, "").strip()
    if not raw:
        return BURST_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"{BURST_ENV}={raw!r} is not a positive number of tasks")
    return size


def burst_arguments() -> dict[str, Any]:
    """Arguments of one burst task: a fresh action id each call."""
    return arguments_for(BURST_TASK)


def drain_budget(size: int) -> float:
    """Seconds a burst of ``size`` tasks may take to finish at SLOWEST_DRAIN_RATE, plus start-up slack."""
    return size / SLOWEST_DRAIN_RATE + 300
