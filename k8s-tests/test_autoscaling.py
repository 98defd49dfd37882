"""A burst of real tasks on one queue makes KEDA scale that pool up and back down; the other pools stay put."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.main.queues import queue_for
from k8s_support.api import TaskApi
from k8s_support.release import POOL_LABEL, ClusterReader, Release
from k8s_support.samples import BURST_ENV, BURST_TASK, burst_arguments, burst_size, drain_budget
from k8s_support.waiting import wait_for
from k8s_support.workloads import list_length_target, pool_for_queue, pool_queues, scale_timings

KEDA = ("keda.sh", "v1alpha1", "scaledobjects")


def scaled_object(custom: Any, release: Release, pool: str) -> dict[str, Any]:
    items = custom.list_namespaced_custom_object(
        *KEDA[:2], release.namespace, KEDA[2], label_selector=release.pool_selector(pool)
    )["items"]
    assert len(items) == 1, (f"expected one ScaledObject for pool {pool} (values-examples/kind.yaml uses "
                             f"autoscaling.engine keda), found {[i['metadata']['name'] for i in items]}")
    return items[0]


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

    before = wait_for(
        lambda: (r := replicas(reader))[target] == timings["min"] and r, timeout=timings["stabilization"] + 300,
        interval=5, description=f"pool {target} to rest at minReplicas={timings['min']} before the burst",
        diagnostics=dump,
    )
    assert timings["max"] > timings["min"], f"pool {target} cannot scale: max {timings['max']} <= min"

    # The backlog must stay above min * per_replica for several polling rounds (samples.BURST_SIZE).
    burst = burst_size()
    ids = task_api.submit_many(BURST_TASK, burst_arguments, burst)

    def others_unchanged() -> None:
        now = replicas(reader)
        moved = {p: (before[p], now[p]) for p in before if p != target and now.get(p) != before[p]}
        assert not moved, f"pools other than {target} changed replicas during the burst: {moved}"

    def scaled_up() -> bool:
        others_unchanged()
        return replicas(reader)[target] > timings["min"]

    wait_for(scaled_up, timeout=timings["polling"] + 180, interval=3,
             description=(f"KEDA to scale pool {target} above {timings['min']} for a burst of {burst} tasks "
                          f"(target {per_replica} queued per replica; if the backlog drained before KEDA "
                          f"saw it, raise {BURST_ENV})"),
             diagnostics=dump)

    task_api.wait_all_success(ids, timeout=drain_budget(burst), diagnostics=dump)

    def scaled_down() -> bool:
        others_unchanged()
        return replicas(reader)[target] == timings["min"]

    # Down one policy step at a time after the stabilization window (KEDA cooldown: only to zero).
    budget = timings["stabilization"] + timings["cooldown"] + timings["scale_down_step"] * timings["max"] + 120
    wait_for(scaled_down, timeout=budget, interval=5,
             description=f"pool {target} to scale back down to {timings['min']}", diagnostics=dump)
