"""k8s_support.keda and friends on the chart's real ScaledObjects (kind + local-cluster values)."""

from __future__ import annotations

from typing import Any

import pytest

from k8s_support.broker import database_index, list_names, llen_command
from k8s_support.keda import (
    PAUSED_REPLICAS,
    minimums,
    paused_replicas_patch,
    readiness_problem,
    warm_pools,
)
from k8s_support.workloads import burst_spillover
from tests.support.render import VALUES_EXAMPLES, render_chart


@pytest.fixture(scope="module")
def scaled() -> dict[str, dict[str, Any]]:
    rendered = render_chart(values_files=[VALUES_EXAMPLES / "kind.yaml", VALUES_EXAMPLES / "local-cluster.yaml"],
                            release="celery-stack", namespace="celery-stack")
    return {m["metadata"]["labels"]["celery-stack.io/pool"]: m for m in rendered if m["kind"] == "ScaledObject"}


def test_kind_values_keep_two_pools_warm_and_let_low_priority_sleep(scaled: dict[str, dict[str, Any]]) -> None:
    assert minimums(scaled.values()) == {"high-priority": 1, "default": 1, "low-priority": 0}
    assert warm_pools(["high-priority", "default", "low-priority", "fixed"], scaled.values()) == {
        "high-priority", "default", "fixed"}  # a pool without a ScaledObject keeps its fixed replicas


def test_readiness_problem_names_keda_reason() -> None:
    def so(conditions: list[dict[str, str]] | None) -> dict[str, Any]:
        return {"metadata": {"name": "rel-worker-default"}, "status": {"conditions": conditions} if conditions else {}}

    assert readiness_problem(so(None)) == "rel-worker-default: no Ready condition yet"
    failed = so([{"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed",
                  "message": "connection to redis failed: dial tcp: lookup rel-redis: no such host"}])
    assert readiness_problem(failed) == ("rel-worker-default: Ready=False (ScaledObjectCheckFailed: connection to "
                                         "redis failed: dial tcp: lookup rel-redis: no such host)")
    assert readiness_problem(so([{"type": "Active", "status": "False"}, {"type": "Ready", "status": "True"}])) is None


def test_paused_replicas_patch_sets_and_removes_the_annotation() -> None:
    assert paused_replicas_patch(0) == {"metadata": {"annotations": {PAUSED_REPLICAS: "0"}}}
    assert paused_replicas_patch(None) == {"metadata": {"annotations": {PAUSED_REPLICAS: None}}}


@pytest.mark.parametrize("levels", [None, [0, 3, 6, 9]], ids=["priorities-off", "kombu-steps"])
def test_broker_counts_the_keys_keda_reads(scaled: dict[str, dict[str, Any]], levels: list[int] | None) -> None:
    if levels:
        rendered = render_chart({"broker": {"priorityLevels": levels}}, values_files=[
            VALUES_EXAMPLES / "kind.yaml", VALUES_EXAMPLES / "local-cluster.yaml"])
        scaled = {m["metadata"]["labels"]["celery-stack.io/pool"]: m for m in rendered if m["kind"] == "ScaledObject"}
    keys = list_names(scaled["high-priority"])
    assert keys == ["high_priority", *(f"high_priority\x06\x16{level}" for level in (levels or [0])[1:])]
    assert database_index(scaled["high-priority"]) == 0
    argv = llen_command(keys, 0, 6379)
    assert argv[:8] == ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", "0", "--raw"]
    assert argv[8] == "EVAL" and argv[10:] == [str(len(keys)), *keys]


def test_burst_spillover_allows_a_sleeping_pool_its_own_wake_ups() -> None:
    floors = {"high-priority": 1, "default": 1, "low-priority": 0}
    before = {"high-priority": 1, "default": 1, "low-priority": 1}
    assert burst_spillover(before, {"high-priority": 3, "default": 1, "low-priority": 0}, "high-priority", floors) == {}
    assert burst_spillover(before, {"high-priority": 3, "default": 2, "low-priority": 1}, "high-priority",
                           floors) == {"default": (1, 2)}
    assert burst_spillover(before, {"high-priority": 3, "default": 1, "low-priority": 2}, "high-priority",
                           floors) == {"low-priority": (1, 2)}


def test_broker_reads_the_lists_of_sentinel_triggers_too() -> None:
    """In Sentinel mode the triggers are `redis-sentinel`: the same keys and database, read on the primary."""
    rendered = render_chart(values_files=[VALUES_EXAMPLES / "kind.yaml", VALUES_EXAMPLES / "local-cluster.yaml",
                                          VALUES_EXAMPLES / "sentinel.yaml"], release="celery-stack")
    scaled = {m["metadata"]["labels"]["celery-stack.io/pool"]: m for m in rendered if m["kind"] == "ScaledObject"}
    assert {t["type"] for t in scaled["high-priority"]["spec"]["triggers"]} == {"redis-sentinel"}
    assert list_names(scaled["high-priority"]) == ["high_priority"]
    assert database_index(scaled["high-priority"]) == 0
    with pytest.raises(AssertionError, match="has no trigger of"):
        list_names({"metadata": {"name": "x"}, "spec": {"triggers": [{"type": "cpu", "metadata": {}}]}})


def test_the_primary_address_a_sentinel_gives_names_its_pod() -> None:
    from types import SimpleNamespace

    from k8s_support.sentinel import pod_of_address

    def pod(name: str, ip: str) -> SimpleNamespace:
        return SimpleNamespace(metadata=SimpleNamespace(name=name), status=SimpleNamespace(pod_ip=ip))

    pods = [pod("rel-redis-node-0", "10.244.0.5"), pod("rel-redis-node-1", "10.244.0.6")]
    assert pod_of_address(pods, "rel-redis-node-1.rel-redis-headless.ns.svc") is pods[1]
    assert pod_of_address(pods, "10.244.0.5") is pods[0]
    assert pod_of_address(pods, "rel-redis-node-2.rel-redis-headless.ns.svc") is None
