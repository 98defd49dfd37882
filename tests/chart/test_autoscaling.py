"""Autoscaling per pool: KEDA ScaledObjects summing every list key, HPA on the exporter metric, or none."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.transport.redis import PRIORITY_STEPS, Channel

from apps.main.queues import WORKER_POOLS
from apps.main.redis_transport import Transport
from tests.support.render import VALUES_EXAMPLES, HelmError, find, one, render_chart

PREFIX = "rel-celery-stack-worker-"


def kombu_keys(queues: tuple[str, ...] | list[str], steps: list[int], prefix: str = "") -> set[str]:
    """The Redis list keys kombu uses for these queues (Channel._q_for_pri: step 0 is the bare name)."""
    return {prefix + (f"{q}{Channel.sep}{s}" if s else q) for q in queues for s in steps}


def scaled_objects(manifests: list[dict]) -> dict[str, dict]:
    return {so["metadata"]["labels"]["celery-stack.io/pool"]: so for so in find(manifests, "ScaledObject")}


@pytest.mark.parametrize("steps", [None, list(PRIORITY_STEPS)], ids=["default", "kombu-steps"])
def test_one_scaled_object_per_pool_with_every_kombu_key(helm: str, steps: list[int] | None) -> None:
    manifests = render_chart({"broker": {"priorityLevels": steps}} if steps else None, helm=helm)
    # The workers read the keys KEDA counts: one value feeds both.
    config = one(manifests, "ConfigMap", "rel-celery-stack-config")["data"]
    assert config["CELERY_BROKER_PRIORITY_STEPS"] == ",".join(map(str, steps or [0]))
    steps = steps or [0]
    objects = scaled_objects(manifests)
    assert set(objects) == set(WORKER_POOLS)
    for name, pool in WORKER_POOLS.items():
        spec = objects[name]["spec"]
        assert spec["scaleTargetRef"]["name"] == PREFIX + name
        names = [t["metadata"]["listName"] for t in spec["triggers"]]
        assert set(names) == kombu_keys(pool.queues, steps)
        assert len(names) == len(set(names))
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["address"] == "rel-celery-stack-redis.ns.svc:6379"
            assert trigger["metadata"]["databaseIndex"] == "0"
            assert trigger["authenticationRef"]["name"] == "rel-celery-stack-keda-redis"
            assert "enableTLS" not in trigger["metadata"]


def test_keda_reaches_the_builtin_redis_by_its_namespaced_service_name() -> None:
    """KEDA's operator resolves the trigger address from ITS namespace (keda), not the release's: the
    short Service name is "no such host" there."""
    manifests = render_chart(namespace="jobs")
    service = one(manifests, "Service", "rel-celery-stack-redis")
    for so in scaled_objects(manifests).values():
        for trigger in so["spec"]["triggers"]:
            host, port = trigger["metadata"]["address"].rsplit(":", 1)
            assert host == f"{service['metadata']['name']}.jobs.svc"
            assert int(port) == service["spec"]["ports"][0]["port"]


def test_scaling_modifiers_sum_every_trigger() -> None:
    for so in scaled_objects(render_chart({"broker": {"priorityLevels": list(PRIORITY_STEPS)}})).values():
        modifiers = so["spec"]["advanced"]["scalingModifiers"]
        terms = [t.strip() for t in modifiers["formula"].split("+")]
        assert sorted(terms) == sorted(t["name"] for t in so["spec"]["triggers"])
        assert modifiers["metricType"] == "AverageValue"
        assert modifiers["target"] == so["spec"]["triggers"][0]["metadata"]["listLength"]


def test_a_single_key_needs_no_formula() -> None:
    """The default: no message priorities, one list key per queue (what atomic delivery needs)."""
    assert Transport.Channel.priority_steps != [0], "kombu's default changed: revisit broker.priorityLevels"
    so = scaled_objects(render_chart())["default"]
    assert [t["metadata"]["listName"] for t in so["spec"]["triggers"]] == ["default"]
    assert "scalingModifiers" not in so["spec"]["advanced"]


def test_pool_with_two_queues_sums_both() -> None:
    values = {"workers": {"mixed": {"queues": ["default", "low_priority"], "concurrency": 2}},
              "broker": {"priorityLevels": [0, 5]}}
    so = scaled_objects(render_chart(values))["mixed"]
    assert {t["metadata"]["listName"] for t in so["spec"]["triggers"]} == kombu_keys(
        ["default", "low_priority"], [0, 5])
    assert len(so["spec"]["advanced"]["scalingModifiers"]["formula"].split("+")) == 4


def test_key_prefix_database_tls_and_auth_follow_the_broker() -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "production.yaml"])
    auth = one(manifests, "TriggerAuthentication", "rel-celery-stack-keda-redis")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "celery-stack-redis",
                                                "key": "password"}]
    for so in scaled_objects(manifests).values():
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert meta["listName"].startswith("celery-stack:")
            assert meta["address"] == "redis.example.internal:6380"
            assert meta["databaseIndex"] == "2"
            assert meta["enableTLS"] == "true"
    # The pods get the same prefix.
    config = find(manifests, "ConfigMap", "rel-celery-stack-config")[0]
    assert config["data"]["CELERY_BROKER_KEY_PREFIX"] == "celery-stack:"


def test_keda_settings_and_behaviour() -> None:
    so = scaled_objects(render_chart(values_files=[VALUES_EXAMPLES / "kind.yaml"]))["default"]["spec"]
    assert (so["pollingInterval"], so["cooldownPeriod"], so["minReplicaCount"], so["maxReplicaCount"]) == (5, 30, 1, 3)
    behavior = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] < behavior["scaleDown"]["stabilizationWindowSeconds"]
    assert so["triggers"][0]["metadata"]["activationListLength"] == "0"


def test_scale_to_zero_example() -> None:
    objects = scaled_objects(render_chart(values_files=[VALUES_EXAMPLES / "scale-to-zero.yaml"]))
    assert objects["default"]["spec"]["minReplicaCount"] == 0
    assert objects["high-priority"]["spec"]["minReplicaCount"] == 1


def test_hpa_engine_uses_the_exporter_metric() -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "hpa-prometheus-adapter.yaml"])
    assert not find(manifests, "ScaledObject") and not find(manifests, "TriggerAuthentication")
    for name, pool in WORKER_POOLS.items():
        hpa = one(manifests, "HorizontalPodAutoscaler", PREFIX + name)
        assert hpa["spec"]["scaleTargetRef"]["name"] == PREFIX + name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "celery_queue_length"
        assert metric["external"]["metric"]["selector"]["matchExpressions"] == [
            {"key": "queue_name", "operator": "In", "values": list(pool.queues)}]
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "20"}
        assert "replicas" not in one(manifests, "Deployment", PREFIX + name)["spec"]


def test_hpa_cannot_scale_to_zero() -> None:
    with pytest.raises(HelmError, match=r"minReplicas must be >= 1 with engine hpa"):
        render_chart({"workerDefaults": {"autoscaling": {"engine": "hpa", "minReplicas": 0}}})


def test_engine_none_renders_no_autoscaler(values_file: Path | None) -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "minimal.yaml"])
    assert not find(manifests, "ScaledObject") and not find(manifests, "HorizontalPodAutoscaler")


def test_missing_keda_api_fails_clearly_unless_skipped() -> None:
    with pytest.raises(HelmError, match=r"keda.sh/v1alpha1.*crds.skipCapabilitiesCheck"):
        render_chart(api_versions=False)
    skipped = render_chart({"crds": {"skipCapabilitiesCheck": True}}, api_versions=False)
    assert len(find(skipped, "ScaledObject")) == len(WORKER_POOLS)
