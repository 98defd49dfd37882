"""Debian packages the local cluster needs, installed with apt-get when a command is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

from localcluster.progress import step

#: command that must exist -> the Debian package providing it
COMMANDS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/docker-registry": "docker-registry",  # the registry Tilt pushes to (configs.REGISTRY)
    "mmdebstrap": "mmdebstrap",
    "iptables": "iptables",
    "conntrack": "conntrack",  # kube-proxy clears stale UDP entries with it
    "ipset": "ipset",  # kube-router's NetworkPolicy firewall keeps its pod sets in ipsets
    "openssl": "openssl",
    "ip": "iproute2",
    # the pause image is compiled statically from Kubernetes' pause.c
    "gcc": "gcc",
    "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev",
}


def _present(command: str) -> bool:
    return os.path.exists(command) if command.startswith("/") else shutil.which(command) is not None


def missing() -> list[str]:
    return sorted({package for command, package in COMMANDS.items() if not _present(command)})


def ensure() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the local cluster runs host processes as root (kubelet, containerd, iptables): run as root")
    needed = missing()
    if not needed:
        return
    with step(f"apt-get install {' '.join(needed)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *needed], check=True, env=env,
                       stdout=subprocess.DEVNULL)
