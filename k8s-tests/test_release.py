"""The release installs: every workload rolls out, each pool consumes its queues, beat is a singleton."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.main.queues import WORKER_POOLS
from k8s_support.release import COMPONENT_LABEL, ClusterReader, Release
from k8s_support.waiting import wait_for
from k8s_support.workloads import pool_queues, rollout_problem

#: Components the kind values run (values-examples/kind.yaml enables Flower and the exporter).
EXPECTED_COMPONENTS = {"web", "worker", "beat", "flower", "exporter"}


def test_every_deployment_becomes_available(reader: ClusterReader, release: Release, dump: Callable[[], str]) -> None:
    def problems() -> list[str]:
        deployments = reader.deployments()
        if not deployments:
            return [f"no Deployments match {release.selector()} in {release.namespace}"]
        return [p for d in deployments if (p := rollout_problem(d))]

    wait_for(
        lambda: not problems(), timeout=600, interval=3,
        description=f"every Deployment of {release.selector()} to be available",
        diagnostics=lambda: f"not ready: {problems()}\n{dump()}",
    )
    components = {(d.metadata.labels or {}).get(COMPONENT_LABEL) for d in reader.deployments()}
    assert components >= EXPECTED_COMPONENTS, f"missing components: {EXPECTED_COMPONENTS - components}"


def test_statefulsets_are_ready(apps: Any, release: Release, dump: Callable[[], str]) -> None:
    def unready() -> list[str]:
        sets = apps.list_namespaced_stateful_set(release.namespace, label_selector=release.selector()).items
        return [f"{s.metadata.name}: {s.status.ready_replicas or 0}/{s.spec.replicas}"
                for s in sets if (s.status.ready_replicas or 0) < (s.spec.replicas or 1)]

    wait_for(lambda: not unready(), timeout=300, interval=3, description="Redis and PostgreSQL to be ready",
             diagnostics=lambda: f"unready: {unready()}\n{dump()}")


def test_migrations_job_succeeded(batch: Any, release: Release, dump: Callable[[], str]) -> None:
    def succeeded() -> bool:
        jobs = batch.list_namespaced_job(release.namespace, label_selector=release.selector("migrations")).items
        return any((job.status.succeeded or 0) >= 1 for job in jobs)

    wait_for(succeeded, timeout=600, interval=3, description="a migrations Job to succeed", diagnostics=dump)


def test_worker_pools_consume_the_queues_of_apps_main_queues(reader: ClusterReader) -> None:
    live = pool_queues(reader.deployments("worker"))
    expected = {pool: spec.queues for pool, spec in WORKER_POOLS.items()}
    assert live == expected, "worker Deployments (-Q) differ from apps.main.queues.WORKER_POOLS"


def test_exactly_one_beat_pod(reader: ClusterReader, release: Release, dump: Callable[[], str]) -> None:
    deployment = reader.one_deployment("beat")
    assert deployment.spec.replicas == 1
    assert deployment.spec.strategy.type == "Recreate", "a rolling update would run two schedulers at once"
    wait_for(
        lambda: len(reader.pods(release.selector("beat"))) == 1,
        timeout=300, interval=2, description="exactly one running beat pod", diagnostics=dump,
    )
    all_pods = reader.pods(release.selector("beat"), running_only=False)
    assert len(all_pods) == 1, f"beat pods (any phase): {[p.metadata.name for p in all_pods]}"
