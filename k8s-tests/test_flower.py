"""Flower behind a port-forward: no credentials, no access; with them, workers of every pool that keeps one.

A scale-to-zero pool (values-examples/kind.yaml: low-priority) rightly has no worker while its queue is
empty; test_scale_to_zero wakes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from k8s_support.keda import scaled_objects, warm_pools
from k8s_support.portforward import PortForward
from k8s_support.release import ClusterReader, Release, service_port
from k8s_support.waiting import wait_for
from k8s_support.workloads import pool_queues


def test_flower_requires_login_and_lists_every_pool(
    reader: ClusterReader, release: Release, custom: Any, forward: Callable[[str, int], PortForward],
    dump: Callable[[], str],
) -> None:
    service = reader.service("flower")
    url = forward(f"svc/{service.metadata.name}", service_port(service, "http")).url

    assert requests.get(f"{url}/", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/workers", auth=("nobody", "wrong"), timeout=10).status_code == 401

    login = reader.environment("flower", "flower")["FLOWER_BASIC_AUTH"]
    user, _, password = login.partition(":")
    assert user and password, "FLOWER_BASIC_AUTH must be user:password"
    assert requests.get(f"{url}/", auth=(user, password), timeout=10).status_code == 200

    expected = warm_pools(pool_queues(reader.deployments("worker")), scaled_objects(custom, release))
    assert expected, "no worker pool keeps a replica: nothing for Flower to list"

    def pools_seen() -> set[str]:
        response = requests.get(f"{url}/api/workers", params={"refresh": "1"}, auth=(user, password), timeout=30)
        response.raise_for_status()
        return {name.split("@", 1)[0] for name in response.json()}

    wait_for(lambda: pools_seen() >= expected, timeout=120, interval=3,
             description=f"Flower to list workers of pools {sorted(expected)}",
             retry_on=(requests.RequestException,),
             diagnostics=lambda: f"seen: {sorted(pools_seen())}\n{dump()}")
