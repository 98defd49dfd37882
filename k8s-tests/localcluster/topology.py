"""Addresses and names of the single-node cluster: one place for CIDRs, ports and the node's identity."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from functools import cached_property


def primary_address() -> str:
    """This machine's own address (the source of its default route): the node IP pods and Services use."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout.split()
    if "src" not in out:  # no default route: loopback-only machine
        return "127.0.0.1"
    return out[out.index("src") + 1]


@dataclass(frozen=True)
class Topology:
    pod_cidr: str = "10.244.0.0/16"
    #: the node's slice of pod_cidr (host-local IPAM of the bridge CNI)
    node_pod_cidr: str = "10.244.0.0/24"
    service_cidr: str = "10.96.0.0/16"
    api_service_ip: str = "10.96.0.1"
    dns_service_ip: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    api_port: int = 6443
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    #: the Linux bridge the CNI plugin creates (removed by cluster-down)
    bridge: str = "cni-cstack0"

    @cached_property
    def node_ip(self) -> str:
        return primary_address()

    @cached_property
    def node_name(self) -> str:
        return socket.gethostname().lower().split(".")[0] or "node"

    @property
    def api_url(self) -> str:
        return f"https://{self.node_ip}:{self.api_port}"
