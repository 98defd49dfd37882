"""KEDA can read every pool's backlog: each ScaledObject of the release becomes Ready=True."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.keda import pool_of, readiness_problem, scaled_objects, served
from k8s_support.release import ClusterReader, Release
from k8s_support.waiting import wait_for
from k8s_support.workloads import pool_queues


def test_every_scaled_object_becomes_ready(
    custom: Any, release: Release, reader: ClusterReader, dump: Callable[[], str]
) -> None:
    """Issue 10, observation 1: with the trigger's address a short Service name, KEDA's operator (in its own
    namespace) could not resolve Redis and every ScaledObject stayed Ready=False ("connection to redis
    failed ... no such host"), so nothing ever scaled. Ready=True means KEDA built the redis scaler,
    i.e. reached the release's Redis."""
    if not served(custom, release):
        pytest.skip("the cluster serves no keda.sh API (KEDA is not installed): no ScaledObject to check")
    pools = set(pool_queues(reader.deployments("worker")))
    items = scaled_objects(custom, release)
    assert {pool_of(item) for item in items} == pools, (
        f"expected one ScaledObject per worker pool {sorted(pools)} (kind values: autoscaling.engine keda), "
        f"found {[item['metadata']['name'] for item in items]}"
    )

    def problems() -> list[str]:
        return [p for item in scaled_objects(custom, release) if (p := readiness_problem(item))]

    wait_for(lambda: not problems(), timeout=180, interval=3,
             description="every ScaledObject of the release to be Ready=True (KEDA reached Redis)",
             diagnostics=lambda: f"not ready: {problems()}\n{dump()}")
