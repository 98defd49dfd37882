"""The Prometheus scrape config the Prometheus Operator generates from the chart's rendered ServiceMonitors.

No cluster here: Kubernetes service discovery is replaced by static targets carrying the ``__meta_kubernetes_*``
labels discovery would give (namespace, Service name and labels, endpoint port name, from the rendered
Service objects); the relabel rules are the operator's, in its order (prometheus-operator
pkg/prometheus/promcfg.go, generateServiceMonitorConfig): keep the Services the selector matches and the
endpoint's port, copy namespace and service, set ``job`` to the Service's name, ``endpoint`` to the port,
then the endpoint's own ``relabelings`` — where the chart sets the one ``job`` (templates/monitoring).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.support.render import find

#: ServiceMonitor RelabelConfig field -> Prometheus relabel_config key (the operator's generateRelabelConfig).
_RELABEL_KEYS = {"sourceLabels": "source_labels", "separator": "separator", "targetLabel": "target_label",
                 "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def relabel_configs(relabelings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A monitor's ``relabelings`` as Prometheus ``relabel_configs``."""
    out = []
    for rule in relabelings:
        unknown = set(rule) - set(_RELABEL_KEYS)
        assert not unknown, f"relabeling field(s) {unknown} the operator does not know: {rule}"
        converted = {_RELABEL_KEYS[key]: value for key, value in rule.items()}
        if "action" in converted:
            converted["action"] = converted["action"].lower()
        out.append(converted)
    return out


def _discovered(service: dict[str, Any], port: str) -> dict[str, str]:
    """The meta labels Kubernetes endpoints discovery gives a target of ``service``'s port ``port``."""
    meta = {"__meta_kubernetes_namespace": service["metadata"]["namespace"],
            "__meta_kubernetes_service_name": service["metadata"]["name"],
            "__meta_kubernetes_endpoint_port_name": port}
    for key, value in (service["metadata"].get("labels") or {}).items():
        meta[f"__meta_kubernetes_service_label_{_sanitize(key)}"] = str(value)
        meta[f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"] = "true"
    return meta


def service_monitor_scrape_configs(manifests: list[dict[str, Any]],
                                   addresses: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """One scrape config per ServiceMonitor endpoint of ``manifests``; ``addresses`` maps a Service's name to
    the host:port of the processes standing in for its pods. Every Service of the monitor's namespaces is a
    candidate target, as with discovery: the selector's keep rules decide."""
    services = find(manifests, "Service")
    configs = []
    for monitor in find(manifests, "ServiceMonitor"):
        spec, namespace, name = monitor["spec"], monitor["metadata"]["namespace"], monitor["metadata"]["name"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [namespace]
        assert not spec["selector"].get("matchExpressions"), "matchExpressions are not converted here"
        for index, endpoint in enumerate(spec["endpoints"]):
            targets = [
                {"targets": [address], "labels": _discovered(service, port["name"])}
                for service in services if service["metadata"]["namespace"] in namespaces
                for port in service["spec"]["ports"]
                for address in addresses.get(service["metadata"]["name"], ())
            ]
            relabel = [
                {"action": "keep",
                 "source_labels": [f"__meta_kubernetes_service_label_{_sanitize(key)}",
                                   f"__meta_kubernetes_service_labelpresent_{_sanitize(key)}"],
                 "regex": f"({value});true"}
                for key, value in sorted(spec["selector"].get("matchLabels", {}).items())
            ]
            relabel += [
                {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                 "regex": endpoint["port"]},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
                {"target_label": "endpoint", "replacement": endpoint["port"]},
                *relabel_configs(endpoint.get("relabelings", [])),
            ]
            config: dict[str, Any] = {
                "job_name": f"serviceMonitor/{namespace}/{name}/{index}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "static_configs": targets,
                "relabel_configs": relabel,
            }
            if "interval" in endpoint:
                config["scrape_interval"] = endpoint["interval"]
            configs.append(config)
    return configs
