"""Worker pods and the queue exporter serve Prometheus metrics that count the work done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from apps.main.queues import QUEUES, task_name
from k8s_support import metrics
from k8s_support.api import TaskApi, host_of_worker, pool_of_worker
from k8s_support.keda import scaled_objects, warm_pools
from k8s_support.portforward import PortForward
from k8s_support.release import ClusterReader, Release, service_port
from k8s_support.samples import arguments_for
from k8s_support.workloads import container_port, pool_queues


def test_worker_metrics_count_the_task_it_ran(
    task_api: TaskApi, reader: ClusterReader, forward: Callable[[str, int], PortForward]
) -> None:
    done = task_api.wait_for_success(task_api.submit("update_analytics", arguments_for("update_analytics"))["id"],
                                     timeout=180)
    pool, pod = pool_of_worker(done["worker"]), host_of_worker(done["worker"])
    deployment = next(d for d in reader.deployments("worker") if d.metadata.name.endswith(f"-worker-{pool}"))
    url = forward(f"pod/{pod}", container_port(deployment, "worker", "metrics")).url

    samples = metrics.parse(requests.get(f"{url}/metrics", timeout=10).text)
    name = task_name("update_analytics")
    succeeded = metrics.total(samples, "celery_task_succeeded_total", name=name)
    assert succeeded >= 1, f"{pod} ran {name} but celery_task_succeeded_total says {succeeded}"
    assert metrics.total(samples, "celery_task_received_total", name=name) >= succeeded
    assert metrics.matching(samples, "celery_task_runtime_count", name=name), "no runtime histogram for the task"


def test_exporter_reports_every_queue_and_its_workers(
    reader: ClusterReader, release: Release, custom: Any, forward: Callable[[str, int], PortForward]
) -> None:
    """Every queue has a backlog gauge; every queue of a pool that keeps a replica has a worker online
    (a scale-to-zero pool rightly has none while idle)."""
    pools = pool_queues(reader.deployments("worker"))
    warm_queues = {q for pool in warm_pools(pools, scaled_objects(custom, release)) for q in pools[pool]}
    service = reader.service("exporter")
    url = forward(f"svc/{service.metadata.name}", service_port(service, "metrics")).url
    samples = metrics.parse(requests.get(f"{url}/metrics", timeout=30).text)

    assert metrics.total(samples, "celery_broker_up") == 1
    for queue in QUEUES:
        assert metrics.matching(samples, "celery_queue_length", queue_name=queue), f"no celery_queue_length{{{queue}}}"
        assert metrics.matching(samples, "celery_workers_online", queue_name=queue), f"no workers_online{{{queue}}}"
        online = metrics.total(samples, "celery_workers_online", queue_name=queue)
        if queue in warm_queues:
            assert online >= 1, f"exporter sees {online:g} workers on {queue}"
