"""The singleton beat keeps scheduling health_check every minute (seen in the default pool's metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from apps.main.queues import queue_for, task_name
from k8s_support import metrics
from k8s_support.portforward import PortForward
from k8s_support.release import ClusterReader, Release
from k8s_support.waiting import wait_for
from k8s_support.workloads import container_port, pool_for_queue, pool_queues

HEALTH = task_name("health_check")


@pytest.mark.timeout(400)
def test_health_check_results_keep_arriving_every_minute(
    reader: ClusterReader, release: Release, forward: Callable[[str, int], PortForward], dump: Callable[[], str]
) -> None:
    pool = pool_for_queue(pool_queues(reader.deployments("worker")), queue_for("health_check"))
    deployment = next(d for d in reader.deployments("worker") if d.metadata.name.endswith(f"-worker-{pool}"))
    port = container_port(deployment, "worker", "metrics")
    urls = {pod.metadata.name: forward(f"pod/{pod.metadata.name}", port).url
            for pod in reader.pods(release.pool_selector(pool))}
    assert urls, f"no running pod in pool {pool}"

    def succeeded() -> float:
        total = 0.0
        for url in urls.values():
            samples = metrics.parse(requests.get(f"{url}/metrics", timeout=10).text)
            total += metrics.total(samples, "celery_task_succeeded_total", name=HEALTH)
        return total

    # Two new results, each within ~a minute (+ scheduling and polling slack) of the previous one.
    seen = [succeeded()]
    arrivals: list[float] = []
    for _ in range(2):
        baseline = seen[-1]
        wait_for(
            lambda b=baseline: succeeded() > b, timeout=100, interval=5,
            description=f"a new health_check result on pool {pool} (succeeded so far: {baseline:g})",
            retry_on=(requests.ConnectionError,), diagnostics=dump,
        )
        arrivals.append(time.monotonic())
        seen.append(succeeded())
    assert arrivals[1] - arrivals[0] < 100, f"health_check results {arrivals[1] - arrivals[0]:.0f}s apart"
