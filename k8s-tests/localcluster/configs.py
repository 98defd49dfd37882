"""Configuration files of the node's runtime pieces: containerd, the CNI network, kubelet, kube-proxy.

Every path points into STATE (runtime) or CACHE (containerd's image store), so `cluster-down` can remove
what the cluster left without touching the machine's own containerd, CNI or kubelet directories.
"""

from __future__ import annotations

import json
from pathlib import Path

from localcluster.paths import CACHE, PKI, RUN, STATE
from localcluster.topology import Topology

CONTAINERD_SOCKET = RUN / "containerd" / "containerd.sock"
#: Images survive cluster-down here (re-importing a dozen images costs minutes); containers do not.
CONTAINERD_ROOT = CACHE / "containerd"
CONTAINERD_STATE = RUN / "containerd-state"
CNI_CONF_DIR = STATE / "cni" / "net.d"
CNI_IPAM_DIR = STATE / "cni" / "ipam"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
KUBELET_ROOT = STATE / "kubelet"
POD_LOGS = STATE / "pod-logs"
VOLUMES = STATE / "volumes"
NETWORK_NAME = "celery-stack-local"
#: The local registry (Debian's docker-registry) Tilt pushes to and containerd pulls from: the port
#: ctlptl gives kind's registry, announced to tools by the `local-registry-hosting` ConfigMap (KEP-1755).
REGISTRY_PORT = 5005
REGISTRY = f"localhost:{REGISTRY_PORT}"
REGISTRY_DATA = STATE / "registry"
CONTAINERD_HOSTS_DIR = STATE / "config" / "certs.d"


def containerd_config(sandbox_image: str) -> str:
    # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE; without it every sandbox fails to start
    # ("can't get final child's PID from pipe: EOF"). SystemdCgroup off: no systemd as PID 1.
    return f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{CNI_CONF_DIR}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{CONTAINERD_HOSTS_DIR}"
"""


def registry_hosts_toml() -> str:
    """containerd's hosts.toml for the local registry: plain HTTP on loopback, pull and resolve only."""
    return f"""server = "http://{REGISTRY}"
[host."http://{REGISTRY}"]
  capabilities = ["pull", "resolve"]
"""


def registry_config() -> str:
    """docker-registry's config: loopback only (kubelet's containerd and our dockerd are on this host)."""
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {REGISTRY_DATA}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{REGISTRY_PORT}
  headers:
    X-Content-Type-Options: [nosniff]
"""


def cni_conflist(topology: Topology) -> str:
    """A Linux bridge with host-local IPAM (the node's pod CIDR), masquerade out, hostPort support."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge", "bridge": topology.bridge, "isGateway": True, "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(CNI_IPAM_DIR),
                         "ranges": [[{"subnet": topology.node_pod_cidr}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }, indent=2)


def kubelet_config(topology: Topology) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {PKI / 'ca.crt'}}}
authorization: {{mode: Webhook}}
tlsCertFile: {PKI / 'kubelet-serving.crt'}
tlsPrivateKeyFile: {PKI / 'kubelet-serving.key'}
containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}
# cgroupfs (no systemd); this VM is cgroup v1, which 1.34 still runs with failCgroupV1 false
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [{topology.dns_service_ip}]
clusterDomain: {topology.cluster_domain}
podCIDR: {topology.node_pod_cidr}
podLogsDir: {POD_LOGS}
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# false: the kubelet sets vm.overcommit_memory, kernel.panic, ... (true would refuse to start on a host
# that differs); network.SYSCTLS records them before and cluster-down puts them back
protectKernelDefaults: false
maxPods: 110
# a test machine's disk is shared with its builds: evict only when it is really full
evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
# two cores: leave the control plane some room
systemReserved: {{cpu: 100m, memory: 256Mi}}
"""


def kube_proxy_config(topology: Topology, kubeconfig: Path) -> str:
    # conntrack zeros and localhostNodePorts false: kube-proxy leaves the host's sysctls as they are
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: iptables
clusterCIDR: {topology.pod_cidr}
hostnameOverride: {topology.node_name}
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""
