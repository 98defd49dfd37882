"""Release helpers on the chart's real output (kind values): env resolution, pools, scaling, rollout."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from kubernetes import client

from apps.main.queues import WORKER_POOLS
from k8s_support.release import ClusterReader, Release, container_environment, expand
from k8s_support.workloads import (
    list_length_target,
    option_value,
    pool_for_queue,
    pool_queues,
    rollout_problem,
    scale_timings,
)
from tests.cluster.kubefake import deserialize, fake_api
from tests.support.render import render_chart

ROOT = Release.from_env({}).chart.parents[1]
KIND_VALUES = ROOT / "values-examples" / "kind.yaml"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_chart(values_files=[KIND_VALUES], release="celery-stack", namespace="celery-stack")


def of_kind(rendered: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in rendered if m["kind"] == kind]


def test_release_defaults_match_the_makefile() -> None:
    release = Release.from_env({})
    assert (release.name, release.namespace, release.context) == ("celery-stack", "celery-stack", None)
    assert release.values == (KIND_VALUES,)
    assert release.selector("web") == "app.kubernetes.io/instance=celery-stack,app.kubernetes.io/component=web"
    assert release.pool_selector("default").endswith(",celery-stack.io/pool=default")


def test_expand_follows_kubernetes_rules() -> None:
    env = {"USER": "admin", "PASSWORD": "p@ss"}
    assert expand("$(USER):$(PASSWORD)", env) == "admin:p@ss"
    assert expand("$$(USER) costs $$5", env) == "$(USER) costs $5"
    assert expand("$(UNKNOWN)", env) == "$(UNKNOWN)"


def test_flower_login_resolves_from_the_rendered_deployment_and_secret(rendered: list[dict[str, Any]]) -> None:
    with fake_api({}) as api:
        (flower,) = [d for d in of_kind(rendered, "Deployment")
                     if d["metadata"]["labels"]["app.kubernetes.io/component"] == "flower"]
        model = deserialize(api, flower, "V1Deployment")
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
               for s in of_kind(rendered, "Secret")}
    config_maps = {c["metadata"]["name"]: c.get("data") or {} for c in of_kind(rendered, "ConfigMap")}

    def secret(name: str) -> dict[str, str]:
        if name not in secrets:
            raise KeyError(name)
        return secrets[name]

    (container,) = [c for c in model.spec.template.spec.containers if c.name == "flower"]
    env = container_environment(container, secret=secret, config_map=lambda name: config_maps[name])
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    assert user == yaml.safe_load((ROOT / "charts/celery-stack/values.yaml").read_text())["flower"]["auth"]["username"]
    assert password and "$(" not in password
    assert env["REDIS_URL"].startswith("redis://:") and "$(" not in env["REDIS_URL"]


def test_missing_required_references_name_the_secret() -> None:
    container = client.V1Container(name="web", env=[client.V1EnvVar(
        name="API_TOKEN", value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name="rel-app", key="API_TOKEN")))])
    with pytest.raises(KeyError, match="API_TOKEN: key 'API_TOKEN' of 'rel-app' not found"):
        container_environment(container, secret=lambda name: {}, config_map=lambda name: {})
    optional = client.V1Container(name="web", env_from=[client.V1EnvFromSource(
        secret_ref=client.V1SecretEnvSource(name="extra", optional=True))], env=[client.V1EnvVar(name="A", value="1")])

    def absent(name: str) -> dict[str, str]:
        raise KeyError(name)

    assert container_environment(optional, secret=absent, config_map=absent) == {"A": "1"}


def test_cluster_reader_reads_api_token_through_the_client(rendered: list[dict[str, Any]]) -> None:
    (web,) = [d for d in of_kind(rendered, "Deployment")
              if d["metadata"]["labels"]["app.kubernetes.io/component"] == "web"]
    objects = {"/apis/apps/v1/namespaces/celery-stack/deployments": {"kind": "DeploymentList", "apiVersion": "apps/v1",
                                                                     "metadata": {}, "items": [web]}}
    for item in of_kind(rendered, "Secret"):
        objects[f"/api/v1/namespaces/celery-stack/secrets/{item['metadata']['name']}"] = item
    for item in of_kind(rendered, "ConfigMap"):
        objects[f"/api/v1/namespaces/celery-stack/configmaps/{item['metadata']['name']}"] = item
    with fake_api(objects) as api:
        reader = ClusterReader(client.CoreV1Api(api), client.AppsV1Api(api), Release.from_env({}))
        env = reader.environment("web", "web")
        with pytest.raises(KeyError, match="Secret celery-stack/nope not found"):
            reader.secret("nope")
    assert len(env["API_TOKEN"]) >= 16


def test_pool_queues_read_off_the_worker_deployments(rendered: list[dict[str, Any]]) -> None:
    with fake_api({}) as api:
        deployments = [deserialize(api, d, "V1Deployment") for d in of_kind(rendered, "Deployment")]
    pools = pool_queues(deployments)
    assert pools == {name: pool.queues for name, pool in WORKER_POOLS.items()}
    assert pool_for_queue(pools, "low_priority") == "low-priority"
    with pytest.raises(AssertionError, match="exactly one pool"):
        pool_for_queue(pools, "celery")
    assert option_value(["celery", "worker", "-Q=a,b"], "-Q") == "a,b"


def test_scale_timings_of_the_kind_scaled_objects(rendered: list[dict[str, Any]]) -> None:
    values = yaml.safe_load(KIND_VALUES.read_text())["workerDefaults"]["autoscaling"]
    (scaled,) = [s for s in of_kind(rendered, "ScaledObject")
                 if s["metadata"]["labels"]["celery-stack.io/pool"] == "high-priority"]
    timings = scale_timings(scaled)
    assert timings["min"] == values["minReplicas"] and timings["max"] == values["maxReplicas"]
    assert timings["polling"] == values["pollingInterval"] and timings["cooldown"] == values["cooldownPeriod"]
    assert timings["stabilization"] == values["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    assert list_length_target(scaled) == values["tasksPerReplica"]


def test_rollout_problem_mirrors_kubectl_rollout_status() -> None:
    def deployment(**status: int) -> client.V1Deployment:
        return client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web", generation=2),
            spec=client.V1DeploymentSpec(replicas=2, selector=client.V1LabelSelector(),
                                         template=client.V1PodTemplateSpec()),
            status=client.V1DeploymentStatus(**status),
        )

    assert "not observed generation 2" in rollout_problem(deployment(observed_generation=1))
    assert "1/2 replicas run the newest" in rollout_problem(deployment(observed_generation=2, updated_replicas=1))
    assert "1 old replicas" in rollout_problem(deployment(observed_generation=2, updated_replicas=2, replicas=3))
    assert "1/2 replicas available" in rollout_problem(
        deployment(observed_generation=2, updated_replicas=2, replicas=2, available_replicas=1))
    assert rollout_problem(deployment(observed_generation=2, updated_replicas=2, replicas=2,
                                      available_replicas=2)) is None
