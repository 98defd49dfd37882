"""Who may open which port, decided from rendered NetworkPolicies as Kubernetes does (networking.k8s.io/v1).

A pod selected by no ingress policy accepts everything; a selected one accepts a connection when any
selecting policy has a rule whose peers match the client (podSelector in the policy's namespace,
namespaceSelector, both, or no ``from`` at all) and whose ports match the target port (a number, or a
container port's name on the server). An ipBlock peer matches a client whose IP is in its cidr and in none
of its ``except`` ranges (a pod without an IP matches none).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)
    #: container port name -> number
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: ``{}`` selects everything; matchLabels and matchExpressions are ANDed."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        ok = {"In": present and labels.get(key) in values, "NotIn": not present or labels.get(key) not in values,
              "Exists": present, "DoesNotExist": not present}[operator]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], client: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if client.ip is None:
            return False
        address, block = ipaddress.ip_address(client.ip), peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], client.namespace_labels)
    else:
        namespace_ok = client.namespace == policy_namespace
    pod_ok = selects(peer["podSelector"], client.labels) if "podSelector" in peer else True
    return namespace_ok and pod_ok


def _port_matches(rule_port: dict[str, Any], server: Pod, port: int) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    number = server.ports.get(wanted) if isinstance(wanted, str) else wanted
    return number == port


def allowed(policies: list[dict[str, Any]], client: Pod, server: Pod, port: int) -> bool:
    selecting = [p for p in policies if p["metadata"]["namespace"] == server.namespace
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"]["podSelector"], server.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers and not any(_peer_matches(peer, client, policy["metadata"]["namespace"]) for peer in peers):
                continue
            ports = rule.get("ports")
            if not ports or any(_port_matches(p, server, port) for p in ports):
                return True
    return False


def release_pods(manifests: list[dict[str, Any]], namespace: str) -> dict[str, Pod]:
    """One Pod per workload, Job and Pod of the render, by its component label (workers: one is enough)."""
    pods: dict[str, Pod] = {}
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = m["spec"]["template"]
            labels, spec = template["metadata"]["labels"], template["spec"]
        elif m["kind"] == "Pod":
            labels, spec = m["metadata"]["labels"], m["spec"]
        else:
            continue
        ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        component = labels["app.kubernetes.io/component"]
        pods.setdefault(component, Pod(f"{m['kind']}/{m['metadata']['name']}", namespace, labels,
                                       {"kubernetes.io/metadata.name": namespace}, ports))
    return pods
