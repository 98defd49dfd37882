"""The chart's NetworkPolicies on a cluster that enforces them: probe pods try every server port of the release.

- a pod without the release's labels opens the web Service and nothing else (Redis, PostgreSQL, Flower,
  the workers' and the exporter's metrics);
- a pod wearing a worker's labels opens Redis and PostgreSQL but not Flower (the labels are what admit);
- a pod labelled as Prometheus (kube-prometheus-stack's label, the chart's default metrics peer) opens the
  metrics ports.

Needs a network plugin that enforces NetworkPolicy (kind's kindnet does; the local cluster runs kube-router's
policy firewall). The test proves enforcement first, with a deny-all policy of its own on a probe
server, and skips, saying so, where a connection to that server still goes through — unless
K8S_TESTS_NETWORK_POLICY_ENFORCED=1 (`make cluster-test`): then that is a failure. The same rules are
evaluated over `helm template` output in tests/chart/test_network_policy.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from k8s_support.podexec import marked_json
from k8s_support.probes import connect_args, deny_all_ingress, probe_pod
from k8s_support.release import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    NAME_LABEL,
    ClusterReader,
    Release,
    service_port,
)
from k8s_support.waiting import wait_for

#: server role, Service port name
SERVERS = (("web", "http"), ("redis", "redis"), ("postgresql", "postgresql"), ("flower", "http"),
           ("worker", "metrics"), ("exporter", "metrics"))
#: Servers only some releases have: the sentinels of the built-in Redis in Sentinel mode (whom the app asks
#: where the primary is).
OPTIONAL_SERVERS = (("redis", "sentinel"),)
#: What a pod with a worker's labels may open (besides web, open to all), of the servers the release has.
WORKER_OPENS = {("redis", "redis"), ("redis", "sentinel"), ("postgresql", "postgresql")}


class Probes:
    """Probe pods of one test, deleted at the end."""

    def __init__(self, core: Any, namespace: str, image: str, dump: Callable[[], str]) -> None:
        self.core, self.namespace, self.image, self.dump = core, namespace, image, dump
        self.suffix = uuid.uuid4().hex[:6]
        self.created: list[str] = []

    def _wait(self, name: str, condition: Callable[[Any], Any], what: str) -> Any:
        return wait_for(lambda: condition(self.core.read_namespaced_pod(name, self.namespace)), timeout=180,
                        interval=2, description=f"probe {name} {what}", diagnostics=self.dump)

    def server(self, role: str) -> str:
        name = f"k8s-tests-np-server-{self.suffix}"
        self.core.create_namespaced_pod(self.namespace, probe_pod(name, self.image, role,
                                                                  ["python", "-m", "http.server", "8080"]))
        self.created.append(name)
        return self._wait(name, lambda pod: pod.status.pod_ip if pod.status.phase == "Running" else None,
                          "to run")

    def connect(self, who: str, targets: list[str], labels: dict[str, str] | None = None,
                until: str = "open") -> dict[str, str]:
        """{target: "open" | the error} as seen from a new pod carrying ``labels`` (probes.connect_args)."""
        name = f"k8s-tests-np-{who}-{self.suffix}"
        self.core.create_namespaced_pod(self.namespace, probe_pod(name, self.image, f"client-{self.suffix}",
                                                                  connect_args(targets, until=until), labels))
        self.created.append(name)
        phase = self._wait(name, lambda pod: pod.status.phase if pod.status.phase in ("Succeeded", "Failed")
                           else None, "to finish")
        log = self.core.read_namespaced_pod_log(name, self.namespace)
        assert phase == "Succeeded", f"probe {name} {phase}: {log}"
        return marked_json(log, "PROBE=")

    def delete(self) -> None:
        for name in self.created:
            try:
                self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def probes(core: Any, reader: ClusterReader, release: Release, dump: Callable[[], str]) -> Iterator[Probes]:
    image = reader.one_deployment("web").spec.template.spec.containers[0].image
    made = Probes(core, release.namespace, image, dump)
    yield made
    made.delete()


def _enforced_or_skip(networking: Any, probes: Probes) -> None:
    """A deny-all policy of the test's own on a probe server: if a stranger still opens it, nothing enforces."""
    policy = f"k8s-tests-np-{probes.suffix}"
    networking.create_namespaced_network_policy(probes.namespace, deny_all_ingress(policy, f"server-{probes.suffix}"))
    try:
        guarded = f"{probes.server(f'server-{probes.suffix}')}:8080"
        seen = probes.connect("enforced", [guarded], until="refused")
    finally:
        networking.delete_namespaced_network_policy(policy, probes.namespace)
    if seen[guarded] == "open":
        assert os.environ.get("K8S_TESTS_NETWORK_POLICY_ENFORCED") != "1", (
            f"K8S_TESTS_NETWORK_POLICY_ENFORCED=1 but a deny-all policy did not stop a connection: {seen}")
        pytest.skip("the cluster's network plugin does not enforce NetworkPolicy: a deny-all policy did not stop a "
                    f"connection to a probe pod ({seen}); run this on kind (kindnet enforces them)")


def _has_port(reader: ClusterReader, release: Release, role: str, port: str) -> bool:
    services = reader.core.list_namespaced_service(release.namespace, label_selector=release.selector(role)).items
    return any(p.name == port for s in services for p in s.spec.ports or [])


def _address(reader: ClusterReader, release: Release, role: str, port: str) -> str:
    """host:port of a role's server: its Service, else (workers: the chart renders their headless Service only
    for a ServiceMonitor; Prometheus scrapes the pods) a running pod's IP and its container port so named —
    the address Prometheus itself opens."""
    services = reader.core.list_namespaced_service(release.namespace, label_selector=release.selector(role)).items
    if services:
        return f"{services[0].metadata.name}:{service_port(services[0], port)}"
    pods = reader.pods(release.selector(role))
    assert pods, f"no Service and no running pod of component {role} ({release.selector(role)})"
    numbers = [p.container_port for c in pods[0].spec.containers for p in c.ports or [] if p.name == port]
    assert numbers, f"pod {pods[0].metadata.name} has no container port named {port!r}"
    return f"{pods[0].status.pod_ip}:{numbers[0]}"


@pytest.mark.timeout(900)
def test_only_the_roles_that_use_a_server_reach_it(
    api_client: Any, reader: ClusterReader, release: Release, probes: Probes
) -> None:
    from kubernetes import client

    networking = client.NetworkingV1Api(api_client)
    if not networking.list_namespaced_network_policy(release.namespace, label_selector=release.selector()).items:
        pytest.skip("the release renders no NetworkPolicy (networkPolicy.enabled is false in its values)")
    _enforced_or_skip(networking, probes)

    servers = [*SERVERS, *(s for s in OPTIONAL_SERVERS if _has_port(reader, release, *s))]
    targets = {(role, port): _address(reader, release, role, port) for role, port in servers}
    everything = list(targets.values())
    web_labels = reader.one_deployment("web").spec.template.metadata.labels
    release_labels = {key: web_labels[key] for key in (NAME_LABEL, INSTANCE_LABEL)}

    stranger = probes.connect("stranger", everything)
    worker = probes.connect("worker", everything, {**release_labels, COMPONENT_LABEL: "worker"})
    prometheus = probes.connect("prometheus", everything, {"app.kubernetes.io/name": "prometheus"})

    def opened(seen: dict[str, str]) -> set[tuple[str, str]]:
        return {server for server, target in targets.items() if seen[target] == "open"}

    assert opened(stranger) == {("web", "http")}, f"a pod without the release's labels: {stranger}"
    assert opened(worker) == {("web", "http"), *(WORKER_OPENS & set(targets))}, (
        f"a pod with a worker's labels: {worker}")
    assert opened(prometheus) == {("web", "http"), ("worker", "metrics"), ("exporter", "metrics")}, (
        f"a pod labelled as Prometheus: {prometheus}")
