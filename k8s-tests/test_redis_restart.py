"""Queued tasks survive a restart of the built-in Redis (AOF on its volume)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.api import TaskApi
from k8s_support.broker import queued, redis_pod
from k8s_support.bursts import burst_pool, submit_burst
from k8s_support.keda import one_scaled_object, patch_scaled_object, paused_replicas_patch
from k8s_support.release import ClusterReader, Release
from k8s_support.sentinel import sentinel_mode
from k8s_support.waiting import wait_for

#: Tasks queued while their pool is paused.
QUEUED = 50


@pytest.mark.disruptive
@pytest.mark.timeout(1200)
def test_redis_restart_keeps_queued_tasks(
    task_api: TaskApi, reader: ClusterReader, release: Release, core: Any, custom: Any, dump: Callable[[], str]
) -> None:
    """Issue 10, point 3 ("the Redis pod restarted with AOF keeps queued tasks"): the consuming pool is paused
    at 0 (KEDA's paused-replicas annotation), N tasks are queued, the Redis pod is deleted; the new Redis
    pod has the N messages back from its append-only file and, unpaused, the pool runs all N to SUCCESS."""
    if sentinel_mode(reader):
        pytest.skip("Sentinel mode: a lost primary is a failover, not a restart (test_redis_failover.py)")
    pool = burst_pool(reader)
    scaled = one_scaled_object(custom, release, pool)
    name = scaled["metadata"]["name"]
    selector = release.pool_selector(pool)

    def pods_of_pool() -> list[Any]:
        return reader.pods(selector, running_only=False)

    patch_scaled_object(custom, release, name, paused_replicas_patch(0))
    try:
        wait_for(lambda: not pods_of_pool(), timeout=300, interval=2, diagnostics=dump,
                 description=f"paused pool {pool} to have no pod (warm shutdown of idle workers)")
        baseline = queued(reader, scaled)
        ids = submit_burst(task_api, QUEUED)
        wait_for(lambda: queued(reader, scaled) >= baseline + QUEUED, timeout=60, interval=1, diagnostics=dump,
                 description=f"{QUEUED} messages in the Redis lists of pool {pool}")

        old = redis_pod(reader)
        core.delete_namespaced_pod(old.metadata.name, release.namespace)

        def new_redis_ready() -> bool:
            pods = reader.pods(release.selector("redis"))
            return any(p.metadata.uid != old.metadata.uid and all(c.ready for c in p.status.container_statuses or [])
                       and p.status.container_statuses for p in pods)

        wait_for(new_redis_ready, timeout=300, interval=2, description="a new Redis pod to be Ready",
                 diagnostics=dump)
        after = queued(reader, scaled)
        assert after >= baseline + QUEUED, (
            f"Redis came back with {after} queued messages in pool {pool}'s lists, expected at least "
            f"{baseline + QUEUED}: the restart lost queued tasks (AOF)")
    finally:
        patch_scaled_object(custom, release, name, paused_replicas_patch(None))

    done = task_api.wait_all_success(ids, timeout=600, diagnostics=dump)
    assert len(done) == QUEUED, f"{QUEUED - len(done)} of {QUEUED} tasks lost"
