"""A burst of real tasks on one queue makes KEDA scale that pool up and back down; the other pools stay put.

The pool's workers drain the burst task about as fast as the API accepts it (an API request costs a token lookup,
a rate-limit count and an audit row; the task one database write), so a burst submitted against a running pool can
leave no backlog for KEDA to see. The pool is therefore held at 0 replicas (KEDA's paused-replicas annotation) until
the burst has queued a backlog of several replicas' worth, then released while the burst goes on: from there, only
KEDA reading the queue length can take it above its minReplicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.main.queues import queue_for
from k8s_support.api import TaskApi
from k8s_support.broker import queued
from k8s_support.bursts import BurstInFlight
from k8s_support.keda import minimums, one_scaled_object, patch_scaled_object, paused_replicas_patch, scaled_objects
from k8s_support.release import POOL_LABEL, ClusterReader, Release
from k8s_support.samples import BURST_ENV, BURST_TASK, burst_size, drain_budget
from k8s_support.waiting import wait_for
from k8s_support.workloads import burst_spillover, list_length_target, pool_for_queue, pool_queues, scale_timings

#: Most bursts submitted while waiting for KEDA to scale the pool up.
SUBMISSION_CAP = 5
#: Backlog, in replicas' worth of KEDA's listLength target, queued before the held pool is released.
BACKLOG_REPLICAS = 10


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

    # Held at 0 while the burst queues a backlog (module doc), then released; the burst goes on until the pool
    # scaled up (at most SUBMISSION_CAP bursts).
    scaled = scaled_object(custom, release, target)
    name = scaled["metadata"]["name"]
    patch_scaled_object(custom, release, name, paused_replicas_patch(0))
    burst: BurstInFlight | None = None
    try:
        wait_for(lambda: not reader.pods(release.pool_selector(target), running_only=False), timeout=300, interval=2,
                 diagnostics=dump, description=f"held pool {target} to have no pod (warm shutdown of idle workers)")
        baseline = queued(reader, scaled)
        backlog = per_replica * BACKLOG_REPLICAS
        burst = BurstInFlight(task_api, burst_size() * SUBMISSION_CAP)
        wait_for(lambda: burst.check() or queued(reader, scaled) >= baseline + backlog, timeout=300, interval=1,
                 diagnostics=dump, description=f"a backlog of {backlog} tasks on held pool {target}")
    except BaseException:
        if burst is not None:
            burst.stop()
        raise
    finally:
        patch_scaled_object(custom, release, name, paused_replicas_patch(None))
    assert burst is not None

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
