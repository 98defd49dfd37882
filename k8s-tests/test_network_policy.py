"""The chart's NetworkPolicies: a pod that is not part of the release reaches neither Redis nor PostgreSQL.

Needs a network plugin that enforces NetworkPolicy (kind's kindnet does). The test proves enforcement
first, with a deny-all policy of its own on a probe server, and skips, saying so, where a connection to
that server still goes through (the local cluster's CNI bridge: README, "Not on the local cluster").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from k8s_support.podexec import marked_json
from k8s_support.probes import CONNECT, deny_all_ingress, probe_pod
from k8s_support.release import ClusterReader, Release, service_port
from k8s_support.waiting import wait_for


@pytest.mark.timeout(600)
def test_pods_outside_the_release_cannot_reach_redis_or_postgresql(
    api_client: Any, core: Any, reader: ClusterReader, release: Release, dump: Callable[[], str]
) -> None:
    """values-examples/kind.yaml enables networkPolicy: only the release's pods (and KEDA's operator) may open
    Redis, only the release's pods PostgreSQL. A stranger pod can open the web Service (no policy there:
    the probe itself works) but neither of the two."""
    from kubernetes import client

    networking = client.NetworkingV1Api(api_client)
    namespace = release.namespace
    policies = networking.list_namespaced_network_policy(namespace, label_selector=release.selector()).items
    if not policies:
        pytest.skip("the release renders no NetworkPolicy (networkPolicy.enabled is false in its values)")

    suffix = uuid.uuid4().hex[:6]
    image = reader.one_deployment("web").spec.template.spec.containers[0].image
    server, probe, policy = f"k8s-tests-np-server-{suffix}", f"k8s-tests-np-client-{suffix}", f"k8s-tests-np-{suffix}"
    targets = {
        name: f"{reader.service(name).metadata.name}:{service_port(reader.service(name), port)}"
        for name, port in (("web", "http"), ("redis", "redis"), ("postgresql", "postgresql"))
    }
    try:
        networking.create_namespaced_network_policy(namespace, deny_all_ingress(policy, f"server-{suffix}"))
        core.create_namespaced_pod(namespace, probe_pod(server, image, f"server-{suffix}",
                                                        ["python", "-m", "http.server", "8080"]))

        def server_ip() -> str | None:
            pod = core.read_namespaced_pod(server, namespace)
            return pod.status.pod_ip if pod.status.phase == "Running" else None

        ip = wait_for(server_ip, timeout=180, interval=2, description=f"probe server {server} to run",
                      diagnostics=dump)
        guarded = f"{ip}:8080"
        core.create_namespaced_pod(namespace, probe_pod(probe, image, f"client-{suffix}",
                                                        ["python", "-c", CONNECT, guarded, *targets.values()]))

        def finished() -> str | None:
            phase = core.read_namespaced_pod(probe, namespace).status.phase
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(finished, timeout=180, interval=2, description=f"probe client {probe} to finish",
                         diagnostics=dump)
        log = core.read_namespaced_pod_log(probe, namespace)
        assert phase == "Succeeded", f"probe client {probe} {phase}: {log}"
        seen = marked_json(log, "PROBE=")
    finally:
        for delete in (lambda: core.delete_namespaced_pod(probe, namespace, grace_period_seconds=0),
                       lambda: core.delete_namespaced_pod(server, namespace, grace_period_seconds=0),
                       lambda: networking.delete_namespaced_network_policy(policy, namespace)):
            try:
                delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise

    assert seen[targets["web"]] == "open", f"the probe could not even open the web Service: {seen}"
    if seen[guarded] == "open":
        pytest.skip("the cluster's network plugin does not enforce NetworkPolicy: a deny-all policy did not stop a "
                    f"connection to a probe pod ({seen}); run this on kind (kindnet enforces them)")
    opened = {name: seen[targets[name]] for name in ("redis", "postgresql") if seen[targets[name]] == "open"}
    assert not opened, f"a pod outside the release opened {sorted(opened)} despite the chart's NetworkPolicies: {seen}"
