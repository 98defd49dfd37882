"""The chart's NetworkPolicies, evaluated as Kubernetes would: who may open each server port of a release.

Clients: every role of the release, a pod of the namespace without the release's labels, the KEDA operator
(namespace ``keda``, as values.yaml selects it) and a Prometheus pod (namespace ``monitoring``, labelled as
kube-prometheus-stack does). The live counterpart is k8s-tests/test_network_policy.py.
"""

from __future__ import annotations

from typing import Any

from tests.chart.network_policy import Pod, allowed, release_pods
from tests.support.render import CHART, find, render_chart

NAMESPACE = "ns"
EXAMPLES = CHART.parent.parent / "values-examples"
ON = {"networkPolicy": {"enabled": True}}
STRANGER = Pod("stranger", NAMESPACE, {"run": "curl"}, {"kubernetes.io/metadata.name": NAMESPACE})
KEDA = Pod("keda-operator", "keda", {"app": "keda-operator"}, {"kubernetes.io/metadata.name": "keda"})
PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"},
                 {"kubernetes.io/metadata.name": "monitoring"})


def matrix(values: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(server role, port name) -> the clients allowed to open it."""
    manifests = render_chart(values, namespace=NAMESPACE)
    policies = find(manifests, "NetworkPolicy")
    pods = release_pods(manifests, NAMESPACE)
    clients = {**pods, "stranger": STRANGER, "keda": KEDA, "prometheus": PROMETHEUS}
    out = {}
    for role, server in pods.items():
        for port_name, port in server.ports.items():
            out[(role, port_name)] = {name for name, client in clients.items()
                                      if client is not server and allowed(policies, client, server, port)}
    return out


def test_each_server_admits_only_the_roles_that_use_it() -> None:
    seen = matrix(ON)
    release = {"web", "worker", "beat", "flower", "exporter", "migrations", "test", "redis", "postgresql"}
    assert seen[("redis", "redis")] == {"web", "worker", "beat", "flower", "exporter", "test", "keda"}
    assert seen[("postgresql", "postgresql")] == {"web", "worker", "beat", "exporter", "migrations", "test"}
    assert seen[("web", "http")] == (release - {"web"}) | {"stranger", "keda", "prometheus"}
    assert seen[("flower", "http")] == set()
    assert seen[("worker", "metrics")] == {"prometheus"}
    assert seen[("exporter", "metrics")] == {"prometheus"}
    # every port of every server is decided by a policy of the chart: none is left open by omission
    assert set(seen) == {("redis", "redis"), ("postgresql", "postgresql"), ("web", "http"), ("flower", "http"),
                         ("worker", "metrics"), ("exporter", "metrics")}


def test_a_pod_without_the_release_labels_reaches_only_web() -> None:
    seen = matrix(ON)
    assert {server for server, clients in seen.items() if "stranger" in clients} == {("web", "http")}


def test_values_open_flower_and_metrics_to_named_peers_and_can_close_web() -> None:
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    seen = matrix({"networkPolicy": {"enabled": True, "flower": {"from": [ingress]}, "metrics": {"from": []},
                                     "web": {"from": [{"podSelector": {"matchLabels": {"run": "curl"}}}]}}})
    assert seen[("flower", "http")] == {"keda"}
    assert seen[("worker", "metrics")] == seen[("exporter", "metrics")] == set()
    assert seen[("web", "http")] == {"stranger"}


def test_pods_that_serve_nothing_are_isolated() -> None:
    policies = find(render_chart(ON, namespace=NAMESPACE), "NetworkPolicy")
    isolated = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                for p in policies if p["spec"]["ingress"] == []}
    assert {"beat", "migrations", "test", "flower"} <= isolated


def test_with_external_servers_no_policy_names_them() -> None:
    """values-examples/production.yaml: external Redis and PostgreSQL, policies on; theirs are the servers' own."""
    manifests = render_chart(values_files=[EXAMPLES / "production.yaml"], namespace=NAMESPACE)
    names = {p["metadata"]["name"] for p in find(manifests, "NetworkPolicy")}
    assert "rel-celery-stack-web" in names
    assert not {"rel-celery-stack-redis", "rel-celery-stack-postgresql"} & names


def test_the_model_refuses_what_kubernetes_refuses() -> None:
    """The evaluator itself: a deny-all policy isolates, a policy without `from` admits all, ports count."""
    server = Pod("s", NAMESPACE, {"app": "s"}, {}, {"http": 80})
    deny = {"metadata": {"namespace": NAMESPACE}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    open_80 = {"metadata": {"namespace": NAMESPACE},
               "spec": {"podSelector": {"matchLabels": {"app": "s"}}, "ingress": [{"ports": [{"port": "http"}]}]}}
    assert allowed([], STRANGER, server, 80)
    assert not allowed([deny], STRANGER, server, 80)
    assert allowed([deny, open_80], STRANGER, server, 80)
    assert not allowed([deny, open_80], STRANGER, server, 81)
    by_ip = {"metadata": {"namespace": NAMESPACE}, "spec": {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}}
    inside, excepted = (Pod("c", "other", {}, {}, {}, ip) for ip in ("10.2.0.5", "10.1.0.5"))
    assert allowed([by_ip], inside, server, 80)
    assert not allowed([by_ip], excepted, server, 80)
    assert not allowed([by_ip], STRANGER, server, 80)  # no IP known: an ipBlock matches nothing
