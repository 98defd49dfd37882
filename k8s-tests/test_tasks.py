"""Each of the seven tasks succeeds through the web API and runs on a pod of its queue's pool."""

from __future__ import annotations

from typing import Any

import pytest

from apps.main.queues import TASK_NAMES, queue_for, task_name
from k8s_support.api import TaskApi, host_of_worker, pool_of_worker
from k8s_support.release import POOL_LABEL, ClusterReader
from k8s_support.samples import arguments_for
from k8s_support.workloads import pool_for_queue, pool_queues


@pytest.fixture(scope="module")
def pools(reader: ClusterReader) -> dict[str, tuple[str, ...]]:
    return pool_queues(reader.deployments("worker"))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_succeeds_on_its_queues_pool(
    name: str, task_api: TaskApi, reader: ClusterReader, core: Any, pools: dict[str, tuple[str, ...]]
) -> None:
    accepted = task_api.submit(name, arguments_for(name))
    assert accepted["task"] == task_name(name)
    assert accepted["queue"] == queue_for(name)

    done = task_api.wait_for_success(accepted["id"], timeout=180)
    expected_pool = pool_for_queue(pools, queue_for(name))
    assert pool_of_worker(done["worker"]) == expected_pool, (
        f"{name} (queue {queue_for(name)}) ran on {done['worker']}, not on pool {expected_pool}"
    )
    # %h is the pod's hostname, i.e. its name: the consuming pod carries the pool's label.
    pod = core.read_namespaced_pod(host_of_worker(done["worker"]), reader.release.namespace)
    assert pod.metadata.labels.get(POOL_LABEL) == expected_pool


def test_api_refuses_requests_without_the_token(web_url: str) -> None:
    import requests

    response = requests.post(f"{web_url}/api/tasks/health_check/", json={}, timeout=10)
    assert response.status_code == 401, response.text
