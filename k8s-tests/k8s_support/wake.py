"""A pool that KEDA scaled to zero, woken by one task of its queue: proof that KEDA reads the queue's backlog
(nothing else starts a pod at zero replicas)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.main.queues import TASK_NAMES, queue_for
from k8s_support.api import TaskApi, pool_of_worker
from k8s_support.keda import minimums, one_scaled_object, scaled_objects
from k8s_support.release import ClusterReader
from k8s_support.samples import arguments_for
from k8s_support.waiting import wait_for
from k8s_support.workloads import pool_queues, scale_timings


def zero_pool(reader: ClusterReader, custom: Any) -> str:
    """The first pool whose ScaledObject lets it rest at zero replicas."""
    floors = minimums(scaled_objects(custom, reader.release))
    zero = sorted(pool for pool, floor in floors.items() if floor == 0)
    assert zero, (f"no pool scales to zero (minReplicaCount per pool: {floors}); values-examples/kind.yaml "
                  "sets workers.low-priority.autoscaling.minReplicas 0")
    return zero[0]


def wake_from_zero(task_api: TaskApi, reader: ClusterReader, custom: Any, pool: str,
                   dump: Callable[[], str]) -> dict[str, Any]:
    """Wait until ``pool`` rests at 0 replicas with no pod, send one task of its queue, wait for its SUCCESS on a
    worker of that pool; the task's status body."""
    release = reader.release
    queues = pool_queues(reader.deployments("worker"))[pool]
    name = next(t for t in TASK_NAMES if queue_for(t) in queues)
    timings = scale_timings(one_scaled_object(custom, release, pool))
    deployment = next(d for d in reader.deployments("worker") if d.metadata.name.endswith(f"-worker-{pool}"))
    grace = deployment.spec.template.spec.termination_grace_period_seconds or 30

    def asleep() -> bool:
        replicas = reader.apps.read_namespaced_deployment(deployment.metadata.name, release.namespace).spec.replicas
        return replicas == 0 and not reader.pods(release.pool_selector(pool), running_only=False)

    wait_for(asleep, timeout=timings["cooldown"] + timings["polling"] + grace + 120, interval=3,
             description=f"pool {pool} to be scaled to zero with no pod left", diagnostics=dump)

    accepted = task_api.submit(name, arguments_for(name))
    done = task_api.wait_for_success(accepted["id"], timeout=timings["polling"] + 400, interval=2)
    assert pool_of_worker(done["worker"]) == pool, f"{name} (queue {queue_for(name)}) ran on {done['worker']}"
    return done
