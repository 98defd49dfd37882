"""Worker pools: one Deployment per pool, the app's command, graceful scale-down, probes, metrics, PDBs."""

from __future__ import annotations

from apps.main.queues import WORKER_POOLS, WorkerPool
from portfolio_site import commands
from portfolio_site.ports import WORKER_METRICS_PORT
from portfolio_site.settings import base
from tests.chart.conftest import env_of
from tests.support.render import find, one, render_chart

PREFIX = "rel-celery-stack-worker-"


def workers(manifests: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["labels"]["celery-stack.io/pool"]: d for d in find(manifests, "Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}


def test_one_deployment_per_pool_with_the_apps_command(helm: str) -> None:
    deployments = workers(render_chart(helm=helm))
    assert set(deployments) == set(WORKER_POOLS)
    for name, pool in WORKER_POOLS.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == commands.worker(name, pool)
        assert "--concurrency" in container["args"]  # never the node's CPU count


def test_custom_pool_serving_two_queues() -> None:
    manifests = render_chart({"workers": {"mixed": {"queues": ["default", "low_priority"], "concurrency": 3}}})
    container = workers(manifests)["mixed"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == commands.worker("mixed", WorkerPool(("default", "low_priority"), 3))


def test_prefetch_and_task_events_are_per_pool_and_the_visibility_timeout_covers_the_largest() -> None:
    manifests = render_chart({"workerDefaults": {"taskEvents": False},
                              "workers": {"default": {"prefetchMultiplier": 8, "taskEvents": True}}})
    pools = workers(manifests)
    for name, pool in WORKER_POOLS.items():
        expected = WorkerPool(pool.queues, pool.concurrency, prefetch_multiplier=8 if name == "default" else
                              pool.prefetch_multiplier, task_events=name == "default")
        assert pools[name]["spec"]["template"]["spec"]["containers"][0]["args"] == commands.worker(name, expected)
    config = one(manifests, "ConfigMap", "rel-celery-stack-config")["data"]
    assert config["WORKER_PREFETCH_MULTIPLIER_MAX"] == "8"
    # The default pools' largest multiplier is the app's own (apps.main.queues), which settings assume.
    default_config = one(render_chart(), "ConfigMap", "rel-celery-stack-config")["data"]
    assert int(default_config["WORKER_PREFETCH_MULTIPLIER_MAX"]) == max(
        p.prefetch_multiplier for p in WORKER_POOLS.values())


def test_a_default_pool_can_be_removed() -> None:
    assert "low-priority" not in workers(render_chart({"workers": {"low-priority": None}}))


def test_grace_period_exceeds_the_hard_time_limit(manifests: list[dict]) -> None:
    for name, deployment in workers(manifests).items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= base.CELERY_TASK_TIME_LIMIT + 30, name


def test_autoscaled_pools_omit_replicas_fixed_pools_set_them() -> None:
    keda = workers(render_chart())
    assert all("replicas" not in d["spec"] for d in keda.values())
    fixed = workers(render_chart({"workerDefaults": {"replicas": 3, "autoscaling": {"engine": "none"}}}))
    assert all(d["spec"]["replicas"] == 3 for d in fixed.values())


def test_liveness_does_not_touch_the_broker_and_metrics_port_is_named(manifests: list[dict]) -> None:
    for deployment in workers(manifests).values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        probe = container["livenessProbe"]["exec"]["command"]
        assert probe[:3] == ["python", "manage.py", "worker_liveness"]
        assert int(probe[probe.index("--max-age") + 1]) > 0
        assert {"name": "metrics", "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"} in container["ports"]
        assert env_of(container)["METRICS_PORT"]["value"] == str(WORKER_METRICS_PORT)
        assert container["resources"]["limits"] and container["resources"]["requests"]


def test_soft_shutdown_is_a_per_pool_value() -> None:
    manifests = render_chart({"workers": {"low-priority": {"softShutdown": {"timeoutSeconds": 45, "onIdle": True}}}})
    env = env_of(workers(manifests)["low-priority"]["spec"]["template"]["spec"]["containers"][0])
    assert env["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]["value"] == "45"
    assert env["CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE"]["value"] == "true"
    other = env_of(workers(manifests)["default"]["spec"]["template"]["spec"]["containers"][0])
    assert other["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]["value"] == "0"


def test_every_pool_has_a_pdb_selecting_only_its_pods() -> None:
    manifests = render_chart()
    for name, deployment in workers(manifests).items():
        pdb = one(manifests, "PodDisruptionBudget", PREFIX + name)
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["maxUnavailable"] == 1


def test_workers_wait_for_migrations(manifests: list[dict]) -> None:
    for deployment in workers(manifests).values():
        init = deployment["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][:3] == ["python", "manage.py", "wait_for_migrations"]
