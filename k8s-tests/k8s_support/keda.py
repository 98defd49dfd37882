"""The release's KEDA ScaledObjects: read them, judge their Ready condition, pause or cap a pool.

Pure helpers take a ScaledObject as the custom-object dict the API returns; the readers and patchers take
a CustomObjectsApi.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from k8s_support.release import POOL_LABEL, Release

SCALED_OBJECTS = ("keda.sh", "v1alpha1", "scaledobjects")
#: KEDA scales the target to this many replicas and stops autoscaling it while the annotation is set.
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def served(custom: Any, release: Release) -> bool:
    """Does the cluster serve KEDA's ScaledObject API (is KEDA installed)?"""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.list_namespaced_custom_object(*SCALED_OBJECTS[:2], release.namespace, SCALED_OBJECTS[2], limit=1)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def scaled_objects(custom: Any, release: Release, pool: str | None = None) -> list[dict[str, Any]]:
    """The release's ScaledObjects (of one pool), sorted by name; none where KEDA is not installed."""
    from kubernetes.client.exceptions import ApiException

    selector = release.pool_selector(pool) if pool else release.selector("worker")
    try:
        items = custom.list_namespaced_custom_object(
            *SCALED_OBJECTS[:2], release.namespace, SCALED_OBJECTS[2], label_selector=selector
        )["items"]
    except ApiException as exc:
        if exc.status == 404:  # no keda.sh API: e.g. Tilt's default dev loop (fixed replicas, no KEDA)
            return []
        raise
    return sorted(items, key=lambda item: item["metadata"]["name"])


def one_scaled_object(custom: Any, release: Release, pool: str) -> dict[str, Any]:
    items = scaled_objects(custom, release, pool)
    assert len(items) == 1, (f"expected one ScaledObject for pool {pool} (values-examples/kind.yaml uses "
                             f"autoscaling.engine keda), found {[i['metadata']['name'] for i in items]}")
    return items[0]


def patch_scaled_object(custom: Any, release: Release, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of one ScaledObject (a None value removes the key)."""
    return custom.patch_namespaced_custom_object(  # type: ignore[no-any-return]
        *SCALED_OBJECTS[:2], release.namespace, SCALED_OBJECTS[2], name, body
    )


def pool_of(scaled_object: dict[str, Any]) -> str:
    labels = scaled_object["metadata"].get("labels") or {}
    if POOL_LABEL not in labels:
        raise AssertionError(f"ScaledObject {scaled_object['metadata']['name']} has no {POOL_LABEL} label")
    return str(labels[POOL_LABEL])


def min_replicas(scaled_object: dict[str, Any]) -> int:
    """minReplicaCount (KEDA's default when absent: 0)."""
    return int(scaled_object["spec"].get("minReplicaCount", 0))


def minimums(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Pool -> minReplicaCount of its ScaledObject."""
    return {pool_of(item): min_replicas(item) for item in items}


def warm_pools(pools: Iterable[str], items: Iterable[dict[str, Any]]) -> set[str]:
    """The pools that always keep a worker: no ScaledObject (fixed replicas or HPA) or minReplicaCount >= 1.

    A scale-to-zero pool rightly has no worker while its queues are empty, so checks that need a live
    worker of every pool (Flower's list, the exporter's workers-online gauge) cover only these.
    """
    floor = minimums(items)
    return {pool for pool in pools if floor.get(pool, 1) >= 1}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition of the given type, or None."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def readiness_problem(scaled_object: dict[str, Any]) -> str | None:
    """Why a ScaledObject is not Ready=True (KEDA could not build its scaler, e.g. reach Redis), or None."""
    name = scaled_object["metadata"]["name"]
    ready = condition(scaled_object, "Ready")
    if ready is None:
        return f"{name}: no Ready condition yet"
    if ready.get("status") != "True":
        return f"{name}: Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
    return None


def paused_replicas_patch(replicas: int | None) -> dict[str, Any]:
    """Merge patch setting (an int) or removing (None) the paused-replicas annotation."""
    return {"metadata": {"annotations": {PAUSED_REPLICAS: None if replicas is None else str(replicas)}}}
