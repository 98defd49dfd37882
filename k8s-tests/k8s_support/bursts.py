"""A burst of real tasks and the check that a disruption hit it while it was still being worked off.

Shared by the disruptive tests (a worker pod deleted, its pool processes killed, a KEDA scale-down).
"""

from __future__ import annotations

from apps.main.queues import queue_for
from k8s_support.api import TaskApi
from k8s_support.release import ClusterReader
from k8s_support.samples import BURST_ENV, BURST_TASK, burst_arguments, burst_size
from k8s_support.workloads import pool_for_queue, pool_queues

#: Burst tasks looked at right after a disruption: the last submitted, so the last to run.
TAIL = 20


def burst_pool(reader: ClusterReader) -> str:
    """The pool that consumes BURST_TASK's queue."""
    return pool_for_queue(pool_queues(reader.deployments("worker")), queue_for(BURST_TASK))


def submit_burst(task_api: TaskApi, size: int | None = None) -> list[str]:
    """Submit a burst (samples.burst_size() tasks unless given); the task ids in submission order."""
    size = burst_size() if size is None else size
    ids = task_api.submit_many(BURST_TASK, burst_arguments, size)
    print(f"submitted {size} {BURST_TASK} tasks")
    return ids


def assert_burst_in_progress(task_api: TaskApi, ids: list[str], disruption: str) -> None:
    """Some of the last tasks of the burst are not done right after ``disruption``: it hit a live burst."""
    unfinished = [task_id for task_id in ids[-TAIL:] if task_api.status(task_id)["state"] != "SUCCESS"]
    assert unfinished, (
        f"all of the last {TAIL} of {len(ids)} burst tasks were already SUCCESS right after {disruption}: the "
        f"burst was over before the disruption, so this run proves nothing; raise {BURST_ENV} (now {len(ids)})"
    )
    print(f"right after {disruption}: {len(unfinished)} of the last {TAIL} burst tasks not done yet")
