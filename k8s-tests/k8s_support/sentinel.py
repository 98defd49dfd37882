"""The built-in Redis in the chart's Sentinel mode, as the tests see it: which pod is the primary now (the
sentinels say), what each data node reports about replication.

In Sentinel mode the StatefulSet's pods (component ``redis``) each run a data node (container ``redis``) and a
sentinel (container ``sentinel``); `redis-cli` in either finds its password in REDISCLI_AUTH (data password in
``redis``, sentinel password in ``sentinel``). Sentinels announce hostnames (``<pod>.<headless service>…``), so
the primary's address names its pod.
"""

from __future__ import annotations

from typing import Any

from k8s_support.podexec import run_in_pod
from k8s_support.release import ClusterReader
from k8s_support.workloads import container_port

DATA_CONTAINER = "redis"
SENTINEL_CONTAINER = "sentinel"
#: The app containers' environment variable naming the Sentinel master (the chart's redis.sentinel.masterName).
MASTER_ENV = "REDIS_SENTINEL_MASTER"


def redis_pods(reader: ClusterReader, *, running_only: bool = True) -> list[Any]:
    return reader.pods(reader.release.selector("redis"), running_only=running_only)


def sentinel_mode(reader: ClusterReader) -> bool:
    """Does the release run the built-in Redis in Sentinel mode (a StatefulSet whose pods carry a sentinel)?"""
    sets = reader.apps.list_namespaced_stateful_set(reader.release.namespace,
                                                    label_selector=reader.release.selector("redis")).items
    return any(c.name == SENTINEL_CONTAINER for s in sets for c in s.spec.template.spec.containers)


def master_name(reader: ClusterReader) -> str:
    name = reader.environment("web", "web").get(MASTER_ENV)
    assert name, f"the web container has no {MASTER_ENV}: is the release in Sentinel mode?"
    return name


def redis_cli(reader: ClusterReader, pod: Any, container: str, *args: str, timeout: float = 30) -> str:
    """`redis-cli --raw …` against the container's own server; its output (a failure raises, naming it)."""
    port = container_port(pod, container, "sentinel" if container == SENTINEL_CONTAINER else "redis")
    result = run_in_pod(reader.core, reader.release.namespace, pod.metadata.name, container,
                        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--raw", *args], timeout=timeout)
    if result.returncode != 0 or result.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS")):
        raise RuntimeError(f"redis-cli {' '.join(args)} in {pod.metadata.name}/{container}: {result.describe()}")
    return result.stdout


def pod_of_address(pods: list[Any], host: str) -> Any | None:
    """The pod a sentinel's primary address names: its hostname's first label, or its IP."""
    label = host.split(".", 1)[0]
    return next((p for p in pods if p.metadata.name == label or p.status.pod_ip == host), None)


def primaries_seen(reader: ClusterReader) -> dict[str, str]:
    """{pod: the primary's pod name as its sentinel names it} for every running pod whose sentinel answers."""
    pods = redis_pods(reader)
    master = master_name(reader)
    seen: dict[str, str] = {}
    for pod in pods:
        try:
            reply = redis_cli(reader, pod, SENTINEL_CONTAINER, "SENTINEL", "get-master-addr-by-name", master,
                              timeout=15).split()
        except (RuntimeError, TimeoutError):
            continue  # a sentinel starting or gone: the others answer
        if reply:
            named = pod_of_address(pods, reply[0])
            seen[pod.metadata.name] = named.metadata.name if named is not None else reply[0]
    return seen


def primary_pod(reader: ClusterReader) -> Any:
    """The running pod the sentinels name as primary (a majority of those that answer must agree)."""
    seen = primaries_seen(reader)
    assert seen, "no sentinel of the release answered `SENTINEL get-master-addr-by-name`"
    named = max(set(seen.values()), key=list(seen.values()).count)
    assert list(seen.values()).count(named) * 2 > len(seen), f"the sentinels disagree on the primary: {seen}"
    pod = next((p for p in redis_pods(reader) if p.metadata.name == named), None)
    assert pod is not None, f"the sentinels name {named} as primary, which is not a running pod of the release"
    return pod


def replication(reader: ClusterReader, pod: Any) -> dict[str, str]:
    """`INFO replication` of the data node in ``pod`` as a dict (role, connected_slaves, master_host…)."""
    text = redis_cli(reader, pod, DATA_CONTAINER, "INFO", "replication")
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def describe_group(reader: ClusterReader) -> str:
    """For diagnostics: each pod's data-node role and master, its sentinel's primary, and which app pods hold
    connections to it (where a client that does not follow a failover is still connected)."""
    owners = {p.status.pod_ip: p.metadata.name for p in reader.pods(reader.release.selector())}
    master = master_name(reader)
    lines = []
    for pod in redis_pods(reader, running_only=False):
        name = pod.metadata.name
        try:
            role = " ".join(redis_cli(reader, pod, DATA_CONTAINER, "ROLE", timeout=10).split()[:3])
            clients = redis_cli(reader, pod, DATA_CONTAINER, "CLIENT", "LIST", timeout=10)
            peers = sorted({owners.get(field.split("=", 1)[1].rsplit(":", 1)[0], "?")
                            for line in clients.splitlines() for field in line.split() if field.startswith("addr=")})
            sentinel = " ".join(redis_cli(reader, pod, SENTINEL_CONTAINER, "SENTINEL", "get-master-addr-by-name",
                                          master, timeout=10).split())
        except (RuntimeError, TimeoutError, AssertionError) as exc:
            lines.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        lines.append(f"{name}: ROLE {role}; its sentinel names {sentinel}; clients from {', '.join(peers)}")
    return "\n".join(lines)
