"""A KEDA scale-down in the middle of a burst loses no task: the removed workers shut down warm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.api import TaskApi
from k8s_support.broker import queued
from k8s_support.bursts import BurstInFlight, burst_pool
from k8s_support.keda import one_scaled_object, patch_scaled_object
from k8s_support.release import ClusterReader, Release
from k8s_support.samples import BURST_ENV, burst_size, drain_budget
from k8s_support.waiting import wait_for
from k8s_support.workloads import scale_timings

#: Most bursts submitted while waiting for the scale-up and the scale-down.
SUBMISSION_CAP = 5


@pytest.mark.disruptive
@pytest.mark.timeout(1500)
def test_keda_scale_down_during_a_burst_loses_no_task(
    task_api: TaskApi, reader: ClusterReader, release: Release, custom: Any, dump: Callable[[], str]
) -> None:
    """Issue 10, point 3 ("a KEDA scale-down during a burst loses nothing"): once KEDA scaled the burst's
    pool up, its ScaledObject's maxReplicaCount drops to 1 while tasks still arrive,
    so the HPA KEDA manages removes the extra workers mid-burst (SIGTERM: warm shutdown; unacknowledged messages go
    back to the queue). maxReplicaCount is restored afterwards; every task of the burst ends in SUCCESS."""
    pool = burst_pool(reader)
    scaled = one_scaled_object(custom, release, pool)
    name = scaled["metadata"]["name"]
    timings = scale_timings(scaled)
    assert timings["max"] >= 2, f"pool {pool} cannot scale above one replica (maxReplicaCount {timings['max']})"
    deployment = next(d for d in reader.deployments("worker") if d.metadata.name.endswith(f"-worker-{pool}"))

    def replicas() -> int:
        return int(reader.apps.read_namespaced_deployment(deployment.metadata.name, release.namespace).spec.replicas
                   or 0)

    def running_pods() -> int:
        return len(reader.pods(release.pool_selector(pool)))

    # Workers drain the burst task about as fast as the API accepts it, so a burst submitted up front can be over
    # before the HPA acts: submit until the scale-down is done (at most SUBMISSION_CAP bursts), so that it
    # removes workers while tasks still arrive.
    burst = BurstInFlight(task_api, burst_size() * SUBMISSION_CAP)
    try:
        def scaled_up() -> bool:
            burst.check()
            return replicas() >= 2 and running_pods() >= 2

        wait_for(scaled_up, timeout=timings["polling"] + 240, interval=1,
                 description=f"KEDA to scale pool {pool} to 2+ running pods (if the burst drained first, raise "
                             f"{BURST_ENV})", diagnostics=dump)
        patch_scaled_object(custom, release, name, {"spec": {"maxReplicaCount": 1}})
        try:
            # The HPA clamps to its new maximum at its next sync (15 s), regardless of scale-down policies.
            wait_for(lambda: replicas() == 1, timeout=180, interval=1, diagnostics=dump,
                     description=f"the HPA of {name} to scale pool {pool} down to 1 (maxReplicaCount 1)")
            print(f"scaled pool {pool} down to 1 with {queued(reader, scaled)} tasks queued")
            ids = burst.ids_after(f"scaling pool {pool} down to 1", task_api, timeout=drain_budget(burst.size),
                                  stop=True)
            done = task_api.wait_all_success(ids, timeout=drain_budget(len(ids)), diagnostics=dump)
            assert all(body["result"] for body in done.values()), [b for b in done.values() if not b["result"]][:5]
        finally:
            patch_scaled_object(custom, release, name, {"spec": {"maxReplicaCount": timings["max"]}})
    finally:
        burst.stop()
    wait_for(lambda: running_pods() == replicas() and replicas() <= timings["max"], timeout=300, interval=3,
             description=f"pool {pool} to settle after restoring maxReplicaCount {timings['max']}", diagnostics=dump)
