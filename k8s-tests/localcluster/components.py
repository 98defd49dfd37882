"""Command lines of the cluster's host processes (the layout of Kubernetes' hack/local-up-cluster.sh).

Order matters and is the order of COMPONENTS: etcd, the control plane, then the node (containerd,
kubelet, kube-proxy, kube-router: the NetworkPolicy agent). Each entry is a pure function of the topology
and paths, so tests can check the flags without starting anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from localcluster import build
from localcluster.configs import KUBELET_ROOT, REGISTRY_PORT
from localcluster.paths import PKI, STATE
from localcluster.topology import Topology

CONFIG_DIR = STATE / "config"
ETCD_DATA = STATE / "etcd"


def _kube(command: str) -> str:
    return str(build.by_name("kubernetes").binary(command))


def _kubeconfig(client: str) -> str:
    return str(CONFIG_DIR / f"{client}.kubeconfig")


def etcd(t: Topology) -> list[str]:
    client = f"http://127.0.0.1:{t.etcd_client_port}"
    peer = f"http://127.0.0.1:{t.etcd_peer_port}"
    # loopback only, so plain HTTP; no fsync: a throwaway test cluster, and fsync is slow on shared disks
    return [str(build.by_name("etcd").binary("etcd")), "--name", "local", "--data-dir", str(ETCD_DATA),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"local={peer}", "--unsafe-no-fsync", "--log-level", "warn"]


def kube_apiserver(t: Topology) -> list[str]:
    return [
        _kube("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{t.etcd_client_port}",
        f"--advertise-address={t.node_ip}", "--bind-address=0.0.0.0", f"--secure-port={t.api_port}",
        f"--service-cluster-ip-range={t.service_cidr}",
        f"--client-ca-file={PKI / 'ca.crt'}",
        f"--tls-cert-file={PKI / 'apiserver.crt'}", f"--tls-private-key-file={PKI / 'apiserver.key'}",
        f"--kubelet-client-certificate={PKI / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={PKI / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={PKI / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-issuer=https://kubernetes.default.svc.{t.cluster_domain}",
        f"--service-account-key-file={PKI / 'sa.pub'}",
        f"--service-account-signing-key-file={PKI / 'sa.key'}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        # aggregated APIs (metrics-server, KEDA's external metrics) authenticate the apiserver by these
        f"--requestheader-client-ca-file={PKI / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={PKI / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={PKI / 'front-proxy-client.key'}",
        # reach aggregated APIs at their endpoints' pod IPs, not through a ClusterIP
        "--enable-aggregator-routing=true",
    ]


def kube_controller_manager(t: Topology) -> list[str]:
    kubeconfig = _kubeconfig("controller-manager")
    return [
        _kube("kube-controller-manager"),
        f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--cluster-signing-cert-file={PKI / 'ca.crt'}", f"--cluster-signing-key-file={PKI / 'ca.key'}",
        f"--root-ca-file={PKI / 'ca.crt'}", f"--service-account-private-key-file={PKI / 'sa.key'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={t.service_cidr}", f"--cluster-cidr={t.pod_cidr}",
        "--leader-elect=false", "--bind-address=127.0.0.1",
    ]


def kube_scheduler(t: Topology) -> list[str]:
    kubeconfig = _kubeconfig("scheduler")
    return [_kube("kube-scheduler"), f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]


def registry(t: Topology) -> list[str]:
    return ["/usr/bin/docker-registry", "serve", str(CONFIG_DIR / "registry.yml")]


def containerd(t: Topology) -> list[str]:
    return ["containerd", "--config", str(CONFIG_DIR / "containerd.toml")]


def kubelet(t: Topology) -> list[str]:
    return [
        _kube("kubelet"),
        f"--config={CONFIG_DIR / 'kubelet.yaml'}", f"--kubeconfig={_kubeconfig('kubelet')}",
        f"--root-dir={KUBELET_ROOT}", f"--hostname-override={t.node_name}", f"--node-ip={t.node_ip}",
    ]


def kube_proxy(t: Topology) -> list[str]:
    return [_kube("kube-proxy"), f"--config={CONFIG_DIR / 'kube-proxy.yaml'}"]


#: kube-router's health port (its default, 20244) and the metrics it would serve (off).
KUBE_ROUTER_HEALTH_PORT = 20244


def kube_router(t: Topology) -> list[str]:
    """kube-router as the NetworkPolicy agent only: its firewall (iptables + ipset, fed by the pods'
    bridged traffic through br_netfilter); routing, service proxy and CNI stay with the bridge plugin and
    kube-proxy."""
    return [
        str(build.by_name("kube-router").binary("kube-router")), f"--kubeconfig={_kubeconfig('admin')}",
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
        "--enable-ipv6=false", f"--hostname-override={t.node_name}", f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
        "--metrics-port=0", f"--service-cluster-ip-range={t.service_cidr}",
    ]


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[Topology], list[str]]
    #: its health URL on this host (None: containerd, checked through its socket)
    health: Callable[[Topology], str] | None = None


COMPONENTS = (
    Component("etcd", etcd, lambda t: f"http://127.0.0.1:{t.etcd_client_port}/health"),
    Component("kube-apiserver", kube_apiserver, lambda t: f"https://127.0.0.1:{t.api_port}/readyz"),
    # default secure ports of the controller manager and the scheduler, healthz open to anyone
    Component("kube-controller-manager", kube_controller_manager, lambda t: "https://127.0.0.1:10257/healthz"),
    Component("kube-scheduler", kube_scheduler, lambda t: "https://127.0.0.1:10259/healthz"),
    Component("registry", registry, lambda t: f"http://127.0.0.1:{REGISTRY_PORT}/v2/"),
    Component("containerd", containerd),
    Component("kubelet", kubelet, lambda t: "http://127.0.0.1:10248/healthz"),
    Component("kube-proxy", kube_proxy, lambda t: "http://127.0.0.1:10256/healthz"),
    Component("kube-router", kube_router, lambda t: f"http://127.0.0.1:{KUBE_ROUTER_HEALTH_PORT}/healthz"),
)
