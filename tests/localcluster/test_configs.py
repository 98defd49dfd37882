"""The node's generated configuration: the VM quirks of docs/cluster.md are encoded, every path is ours."""

from __future__ import annotations

import ipaddress
import json
import tomllib

import yaml

from localcluster import configs
from localcluster.paths import CACHE, STATE
from localcluster.topology import Topology

TOPOLOGY = Topology()


def test_containerd_config_works_around_the_vm_and_keeps_to_our_directories() -> None:
    config = tomllib.loads(configs.containerd_config("celery-stack.local/pause:3.10"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True, "without it every sandbox fails on a host lacking CAP_SYS_RESOURCE"
    assert cri["sandbox_image"] == "celery-stack.local/pause:3.10"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert config["root"].startswith(str(CACHE)) and config["state"].startswith(str(STATE))
    assert config["grpc"]["address"].startswith(str(STATE)), "never the host's own /run/containerd socket"
    assert cri["cni"]["conf_dir"].startswith(str(STATE))


def test_cni_network_gives_pods_the_node_slice_of_the_pod_cidr() -> None:
    conflist = json.loads(configs.cni_conflist(TOPOLOGY))
    bridge = conflist["plugins"][0]
    subnet = ipaddress.ip_network(bridge["ipam"]["ranges"][0][0]["subnet"])
    assert subnet.subnet_of(ipaddress.ip_network(TOPOLOGY.pod_cidr))
    assert bridge["ipam"]["dataDir"].startswith(str(STATE))
    assert len(bridge["bridge"]) <= 15, "Linux interface names are at most 15 characters"
    assert {p["type"] for p in conflist["plugins"]} == {"bridge", "portmap", "loopback"}


def test_kubelet_runs_on_cgroup_v1_without_systemd_and_writes_only_under_state() -> None:
    config = yaml.safe_load(configs.kubelet_config(TOPOLOGY))
    assert config["cgroupDriver"] == "cgroupfs" and config["failCgroupV1"] is False
    assert config["clusterDNS"] == [TOPOLOGY.dns_service_ip]
    assert config["containerRuntimeEndpoint"] == f"unix://{configs.CONTAINERD_SOCKET}"
    assert config["podLogsDir"].startswith(str(STATE))
    assert ipaddress.ip_address(TOPOLOGY.dns_service_ip) in ipaddress.ip_network(TOPOLOGY.service_cidr)


def test_kube_proxy_leaves_host_sysctls_alone() -> None:
    config = yaml.safe_load(configs.kube_proxy_config(TOPOLOGY, STATE / "proxy.kubeconfig"))
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["min"] == 0
    assert config["iptables"]["localhostNodePorts"] is False, "true would set route_localnet on the host"


def test_containerd_pulls_from_the_local_registry_over_plain_http_on_loopback() -> None:
    cri = tomllib.loads(configs.containerd_config("p"))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["config_path"] == str(configs.CONTAINERD_HOSTS_DIR)
    assert str(configs.CONTAINERD_HOSTS_DIR).startswith(str(STATE))
    hosts = tomllib.loads(configs.registry_hosts_toml())
    assert hosts["server"] == f"http://{configs.REGISTRY}"
    assert hosts["host"][f"http://{configs.REGISTRY}"]["capabilities"] == ["pull", "resolve"]
    registry = yaml.safe_load(configs.registry_config())
    assert registry["http"]["addr"] == f"127.0.0.1:{configs.REGISTRY_PORT}", "loopback only"
    assert registry["storage"]["filesystem"]["rootdirectory"] == str(configs.REGISTRY_DATA)
    assert str(configs.REGISTRY_DATA).startswith(str(STATE))


def test_the_tiltfile_recognises_this_clusters_context_and_registry() -> None:
    """The Tiltfile (Starlark, it cannot import this) names the context pki writes into the kubeconfig."""
    import inspect
    import re
    from pathlib import Path

    from localcluster import pki

    tiltfile = (Path(__file__).resolve().parents[2] / "Tiltfile").read_text()
    context = inspect.signature(pki.kubeconfig).parameters["context"].default
    assert re.search(rf'^LOCAL_CLUSTER_CONTEXT = "{re.escape(context)}"$', tiltfile, re.M), context
