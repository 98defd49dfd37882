"""Facts read off live workload objects: rollout state, a pool's queues, a ScaledObject's timings."""

from __future__ import annotations

from typing import Any

from k8s_support.release import POOL_LABEL


def rollout_problem(deployment: Any) -> str | None:
    """Why a Deployment is not fully rolled out and available, or None when it is.

    The same checks as `kubectl rollout status`: the controller saw the newest spec, every replica
    runs the newest template, and all of them are available.
    """
    name = deployment.metadata.name
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return f"{name}: controller has not observed generation {deployment.metadata.generation} yet"
    updated = status.updated_replicas or 0
    if updated < spec_replicas:
        return f"{name}: {updated}/{spec_replicas} replicas run the newest template"
    if (status.replicas or 0) > updated:
        return f"{name}: {status.replicas - updated} old replicas still terminating"
    available = status.available_replicas or 0
    if available < spec_replicas:
        return f"{name}: {available}/{spec_replicas} replicas available"
    return None


def container_args(container: Any) -> list[str]:
    return list(container.command or []) + list(container.args or [])


def option_value(argv: list[str], option: str) -> str | None:
    """The value of ``-Q x`` / ``-Q=x`` style options in a command line."""
    for index, arg in enumerate(argv):
        if arg == option and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def pool_queues(deployments: list[Any]) -> dict[str, tuple[str, ...]]:
    """Pool name -> queues, from each worker Deployment's pool label and its `celery worker -Q` argument."""
    pools: dict[str, tuple[str, ...]] = {}
    for deployment in deployments:
        pool = (deployment.metadata.labels or {}).get(POOL_LABEL)
        if not pool:
            continue
        for container in deployment.spec.template.spec.containers:
            argv = container_args(container)
            queues = option_value(argv, "-Q") or option_value(argv, "--queues")
            if "worker" in argv and queues:
                pools[pool] = tuple(q.strip() for q in queues.split(",") if q.strip())
    return pools


def pool_for_queue(pools: dict[str, tuple[str, ...]], queue: str) -> str:
    owners = [pool for pool, queues in pools.items() if queue in queues]
    if len(owners) != 1:
        raise AssertionError(f"queue {queue!r} should be consumed by exactly one pool, got {owners} of {pools}")
    return owners[0]


def container_port(workload: Any, container_name: str, port_name: str) -> int:
    """A named container port of a Deployment's or StatefulSet's pod template, or of a pod."""
    spec = workload.spec.template.spec if getattr(workload.spec, "template", None) is not None else workload.spec
    for container in spec.containers:
        if container.name == container_name:
            for port in container.ports or []:
                if port.name == port_name:
                    return int(port.container_port)
    raise AssertionError(f"{workload.metadata.name}: container {container_name!r} has no port {port_name!r}")


def scale_timings(scaled_object: dict[str, Any]) -> dict[str, int]:
    """What bounds a KEDA scale cycle, from a ScaledObject (custom object dict).

    Scale-down to minReplicas is governed by the HPA's scaleDown stabilization window (KEDA's
    cooldownPeriod only applies to scaling to zero); scale-up by the polling interval.
    """
    spec = scaled_object["spec"]
    behavior = (
        spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}) or {}
    )
    scale_down = behavior.get("scaleDown", {}) or {}
    policies = scale_down.get("policies") or []
    # A policy removing N pods per P seconds: the slowest step of a full scale-down.
    step_seconds = max((int(p.get("periodSeconds", 15)) for p in policies), default=15)
    return {
        "min": int(spec.get("minReplicaCount", 0)),
        "max": int(spec.get("maxReplicaCount", 100)),
        "polling": int(spec.get("pollingInterval", 30)),
        "cooldown": int(spec.get("cooldownPeriod", 300)),
        "stabilization": int(scale_down.get("stabilizationWindowSeconds", 300)),
        "scale_down_step": step_seconds,
    }


def list_length_target(scaled_object: dict[str, Any]) -> int:
    """Queued tasks per replica the pool scales on (scalingModifiers target, else the trigger's)."""
    spec = scaled_object["spec"]
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers and modifiers.get("target"):
        return int(float(modifiers["target"]))
    return int(spec["triggers"][0]["metadata"]["listLength"])


def burst_spillover(
    before: dict[str, int], now: dict[str, int], target: str, floors: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Pools other than ``target`` whose replicas moved while only ``target``'s queue had a burst.

    ``floors`` is each pool's minReplicaCount. A scale-to-zero pool (floor 0) may move between 0 and 1
    on its own schedule (beat sends it a task, its cooldown ends): that is not the burst's doing. Any
    other move, or a scale-to-zero pool above 1, is: pool -> (replicas before, replicas now).
    """
    moved = {}
    for pool, old in before.items():
        if pool == target:
            continue
        new = now.get(pool, 0)
        idle_wake = floors.get(pool, 1) == 0 and old <= 1 and new <= 1
        if new != old and not idle_wake:
            moved[pool] = (old, new)
    return moved
