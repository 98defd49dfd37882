"""The cluster's add-ons: CoreDNS, metrics-server, KEDA, a local-path storage provisioner and the
announcement of the local registry.

Manifests come from the pinned Go modules themselves (metrics-server's and KEDA's kustomize bases,
local-path-provisioner's deploy/), with the images swapped for the locally built ones; CoreDNS ships
no manifests in its module, so its Deployment is written here. Each substitution is asserted, so a
version bump that moves a line fails loudly here instead of pulling from a registry in the cluster.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import build, versions
from localcluster.configs import REGISTRY, VOLUMES
from localcluster.topology import Topology


@dataclass(frozen=True)
class Addon:
    name: str
    render: Callable[[Topology, dict[str, str], Path], str]
    #: (namespace, Deployment) pairs that must become Available
    deployments: tuple[tuple[str, str], ...]
    #: APIServices that must become Available
    api_services: tuple[str, ...] = ()


def replace_all(text: str, substitutions: dict[str, str], what: str) -> str:
    """Every key must occur; a pinned manifest that changed shape fails here, naming what moved."""
    for old, new in substitutions.items():
        if old not in text:
            raise ValueError(f"{what}: expected {old!r} in the upstream manifest (did its version change?)")
        text = text.replace(old, new)
    return text


def _kustomize(kubectl: Path, directory: Path) -> str:
    result = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return result.stdout


def _module_dir(component: str) -> Path:
    c = build.by_name(component)
    return build.module_source(c.module, c.version)


COREDNS = """apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        prometheus :9153
        forward . /etc/resolv.conf
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}, annotations: {celery-stack.local/corefile: CHECKSUM}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: IMAGE
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        # 1053: a non-root process cannot bind 53 (an added NET_BIND_SERVICE is not effective for
        # non-root users, and a FROM scratch image has no file capabilities); the Service maps 53 to it
        ports:
        - {containerPort: 1053, name: dns, protocol: UDP}
        - {containerPort: 1053, name: dns-tcp, protocol: TCP}
        - {containerPort: 9153, name: metrics, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
        livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}}
        resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 170Mi}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: DNS_SERVICE_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
"""


def render_coredns(topology: Topology, images: dict[str, str], kubectl: Path) -> str:
    # the checksum rolls the pods when the Corefile changes (a crashing CoreDNS never reloads it)
    checksum = hashlib.sha256(COREDNS.encode()).hexdigest()[:16]
    return replace_all(COREDNS, {"IMAGE": images["coredns"], "CLUSTER_DOMAIN": topology.cluster_domain,
                                 "DNS_SERVICE_IP": topology.dns_service_ip, "CHECKSUM": f'"{checksum}"'},
                       "coredns")


def render_metrics_server(topology: Topology, images: dict[str, str], kubectl: Path) -> str:
    text = _kustomize(kubectl, _module_dir("metrics-server") / "manifests" / "base")
    # the kubelet's serving certificate is signed by the cluster CA, which metrics-server is not given
    return replace_all(text, {
        "gcr.io/k8s-staging-metrics-server/metrics-server:master": images["metrics-server"],
        "- --kubelet-use-node-status-port": "- --kubelet-use-node-status-port\n        - --kubelet-insecure-tls",
    }, "metrics-server")


def render_keda(topology: Topology, images: dict[str, str], kubectl: Path) -> str:
    text = _kustomize(kubectl, _module_dir("keda") / "config" / "default")
    return replace_all(text, {
        "ghcr.io/kedacore/keda:main": images["keda-operator"],
        "ghcr.io/kedacore/keda-metrics-apiserver:main": images["keda-adapter"],
        "ghcr.io/kedacore/keda-admission-webhooks:main": images["keda-admission-webhooks"],
        "imagePullPolicy: Always": "imagePullPolicy: IfNotPresent",  # Always would go to a registry
    }, "keda")


def render_local_path(topology: Topology, images: dict[str, str], kubectl: Path) -> str:
    version = versions.get("LOCAL_PATH_PROVISIONER_VERSION")
    text = (_module_dir("local-path-provisioner") / "deploy" / "local-path-storage.yaml").read_text()
    # the default StorageClass: the chart's Redis and PostgreSQL claims name none
    return replace_all(text, {
        f"rancher/local-path-provisioner:{version}": images["local-path-provisioner"],
        "image: busybox": f"image: {images['debian']}",
        '"paths":["/opt/local-path-provisioner"]': f'"paths":["{VOLUMES}"]',
        "  name: local-path\n": "  name: local-path\n  annotations:\n"
                                "    storageclass.kubernetes.io/is-default-class: \"true\"\n",
    }, "local-path-provisioner")


def render_registry_hosting(topology: Topology, images: dict[str, str], kubectl: Path) -> str:
    # KEP-1755: how Tilt (and ctlptl, Skaffold) find where to push images for this cluster. The node's
    # containerd runs on this host, so it reaches the registry at the same address.
    return f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: local-registry-hosting, namespace: kube-public}}
data:
  localRegistryHosting.v1: |
    host: "{REGISTRY}"
    hostFromContainerRuntime: "{REGISTRY}"
    help: "make cluster-up runs Debian's docker-registry on {REGISTRY} (docs/cluster.md)"
"""


ADDONS = (
    Addon("local-path-provisioner", render_local_path, (("local-path-storage", "local-path-provisioner"),)),
    Addon("coredns", render_coredns, (("kube-system", "coredns"),)),
    Addon("metrics-server", render_metrics_server, (("kube-system", "metrics-server"),),
          ("v1beta1.metrics.k8s.io",)),
    Addon("keda", render_keda, (("keda", "keda-operator"), ("keda", "keda-metrics-apiserver"),
                                ("keda", "keda-admission")),
          ("v1beta1.external.metrics.k8s.io",)),
    Addon("local-registry-hosting", render_registry_hosting, ()),
)
