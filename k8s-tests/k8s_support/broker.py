"""Count a pool's queued messages in the built-in Redis itself (`redis-cli` exec'd in its container).

The keys are the ones KEDA reads: each redis (or redis-sentinel) trigger's ``listName`` of the pool's
ScaledObject (the queue key and its kombu priority-step keys), so the count is the backlog KEDA scales on.
In Sentinel mode the count is read on the primary the sentinels name.
"""

from __future__ import annotations

from typing import Any

from k8s_support.podexec import run_in_pod
from k8s_support.release import ClusterReader
from k8s_support.sentinel import primary_pod, sentinel_mode

#: KEDA's scalers of the built-in Redis: one server, or the sentinels that name the primary.
REDIS_TRIGGERS = ("redis", "redis-sentinel")
#: Sums LLEN over KEYS (absent keys count 0).
SUM_LLEN = "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('LLEN', k) end return n"


def redis_triggers(scaled_object: dict[str, Any]) -> list[dict[str, Any]]:
    triggers = [t for t in scaled_object["spec"]["triggers"] if t.get("type") in REDIS_TRIGGERS]
    if not triggers:
        raise AssertionError(f"ScaledObject {scaled_object['metadata']['name']} has no trigger of {REDIS_TRIGGERS}")
    return triggers


def list_names(scaled_object: dict[str, Any]) -> list[str]:
    """The Redis list keys of a ScaledObject's Redis triggers."""
    return [t["metadata"]["listName"] for t in redis_triggers(scaled_object)]


def database_index(scaled_object: dict[str, Any]) -> int:
    return int(redis_triggers(scaled_object)[0]["metadata"].get("databaseIndex", 0))


def llen_command(keys: list[str], database: int, port: int) -> list[str]:
    """redis-cli sums the lengths of ``keys`` (REDISCLI_AUTH comes from the container's environment)."""
    return ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "-n", str(database), "--raw",
            "EVAL", SUM_LLEN, str(len(keys)), *keys]


def redis_pod(reader: ClusterReader) -> Any:
    """The pod whose Redis takes writes: the only one, or in Sentinel mode the primary the sentinels name."""
    if sentinel_mode(reader):
        return primary_pod(reader)
    pods = reader.pods(reader.release.selector("redis"))
    assert len(pods) == 1, f"expected one running Redis pod, found {[p.metadata.name for p in pods]}"
    return pods[0]


def queued(reader: ClusterReader, scaled_object: dict[str, Any]) -> int:
    """Messages waiting in the pool's lists now, read in the built-in Redis."""
    pod = redis_pod(reader)
    container = next(c for c in pod.spec.containers if c.name == "redis")
    port = next((p.container_port for p in container.ports or [] if p.name == "redis"), 6379)
    result = run_in_pod(reader.core, reader.release.namespace, pod.metadata.name, "redis",
                        llen_command(list_names(scaled_object), database_index(scaled_object), port), timeout=30)
    value = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and value.isdigit(), f"redis-cli EVAL in {pod.metadata.name}: {result.describe()}"
    return int(value)
