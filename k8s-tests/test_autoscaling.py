"""A burst of real tasks on one queue makes KEDA scale that pool up and back down; the other pools stay put."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.main.queues import queue_for
from k8s_support.api import TaskApi
from k8s_support.bursts import BurstInFlight
from k8s_support.keda import minimums, one_scaled_object, scaled_objects
from k8s_support.release import POOL_LABEL, ClusterReader, Release
from k8s_support.samples import BURST_ENV, BURST_TASK, burst_size, drain_budget
from k8s_support.waiting import wait_for
from k8s_support.workloads import burst_spillover, list_length_target, pool_for_queue, pool_queues, scale_timings

#: Most bursts submitted while waiting for KEDA to scale the pool up.
SUBMISSION_CAP = 5


def scaled_object(custom: Any, release: Release, pool: str) -> dict[str, Any]:
    return one_scaled_object(custom, release, pool)


def replicas(reader: ClusterReader) -> dict[str, int]:
    return {d.metadata.labels[POOL_LABEL]: d.spec.replicas or 0 for d in reader.deployments("worker")}


@pytest.mark.disruptive
@pytest.mark.timeout(1500)
def test_burst_scales_its_pool_up_and_down_and_no_other(
    task_api: TaskApi, reader: ClusterReader, release: Release, custom: Any, dump: Callable[[], str]
) -> None:
    pools = pool_queues(reader.deployments("worker"))
    target = pool_for_queue(pools, queue_for(BURST_TASK))
    timings = scale_timings(scaled_object(custom, release, target))
    per_replica = list_length_target(scaled_object(custom, release, target))
    floors = minimums(scaled_objects(custom, release))

    # Every pool at rest first: one still cooling down from an earlier test would move during the burst.
    def at_rest() -> dict[str, int] | None:
        now = replicas(reader)
        return now if all(now[pool] == floors.get(pool, now[pool]) for pool in now) else None

    before = wait_for(
        at_rest, timeout=timings["stabilization"] + timings["cooldown"] + 300, interval=5,
        description=f"every pool to rest at its minReplicas {floors} before the burst", diagnostics=dump,
    )
    assert timings["max"] > timings["min"], f"pool {target} cannot scale: max {timings['max']} <= min"

    # Workers drain the burst task about as fast as the API accepts it, so a fixed burst can be over before
    # KEDA's next poll sees a backlog: keep submitting until the pool scaled up (at most SUBMISSION_CAP bursts).
    burst = BurstInFlight(task_api, burst_size() * SUBMISSION_CAP)

    def others_unchanged() -> None:
        moved = burst_spillover(before, replicas(reader), target, floors)
        assert not moved, f"pools other than {target} changed replicas during the burst (before, now): {moved}"

    def scaled_up() -> bool:
        burst.check()
        others_unchanged()
        return replicas(reader)[target] > timings["min"]

    try:
        wait_for(scaled_up, timeout=timings["polling"] + 180, interval=3,
                 description=(f"KEDA to scale pool {target} above {timings['min']} while up to {burst.size} tasks "
                              f"were submitted (target {per_replica} queued per replica; if the backlog drained "
                              f"before KEDA saw it, raise {BURST_ENV})"),
                 diagnostics=dump)
    finally:
        burst.stop()
    ids = burst.join(timeout=drain_budget(burst.size))
    task_api.wait_all_success(ids, timeout=drain_budget(len(ids)), diagnostics=dump)

    def scaled_down() -> bool:
        others_unchanged()
        return replicas(reader)[target] == timings["min"]

    # Down one policy step at a time after the stabilization window (KEDA cooldown: only to zero).
    budget = timings["stabilization"] + timings["cooldown"] + timings["scale_down_step"] * timings["max"] + 120
    wait_for(scaled_down, timeout=budget, interval=5,
             description=f"pool {target} to scale back down to {timings['min']}", diagnostics=dump)
