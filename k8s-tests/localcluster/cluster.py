"""`make cluster-up`: build, start and wait for the single-node cluster; idempotent.

Steps, each with its elapsed time: Debian packages, Go builds (cached), images (cached), certificates
and configs, host networking, etcd and the control plane, containerd + images, kubelet, kube-proxy,
add-ons (CoreDNS, metrics-server, KEDA, local-path storage), then the node Ready and the metrics APIs
Available. The admin kubeconfig is written to paths.KUBECONFIG.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from localcluster import addons, build, configs, images, network, packages, pki, processes
from localcluster.components import COMPONENTS, CONFIG_DIR, Component
from localcluster.paths import KUBECONFIG, LOGS, PKI, RUN, STATE
from localcluster.progress import say, step
from localcluster.topology import Topology

READY_MARKER = RUN / "ready"
IMAGES_ENV = RUN / "images.env"
#: `. env.sh`: kubectl, helm, tilt and docker aimed at this cluster, its dockerd and its registry.
SHELL_ENV = STATE / "env.sh"
SYSCTL_RECORD = STATE / "sysctls.json"
#: Host paths the runtime pieces create outside STATE; cluster-down removes those that were not there before.
HOST_PATHS = (Path("/var/lib/cni"), Path("/run/containerd"), Path("/var/log/containers"), Path("/var/log/pods"),
              Path("/run/netns"), Path("/var/run/netns"))
HOST_PATHS_RECORD = STATE / "preexisting-paths.json"


class ClusterError(RuntimeError):
    """A component did not come up; the message carries the end of its log."""


def kubectl_binary() -> Path:
    from tests.support.tools import tool_path  # the same pinned kubectl the k8s-tests use

    return tool_path("kubectl")


def kubectl(*args: str, input_text: str | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [str(kubectl_binary()), "--kubeconfig", str(KUBECONFIG), *args]
    result = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ClusterError(f"`kubectl {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, diagnostics: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")


def _healthy(url: str) -> bool:
    # loopback health endpoints only: the controller manager and scheduler serve self-signed certificates
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start(component: Component, topology: Topology, *, timeout: float = 120) -> None:
    process = processes.start(component.name, component.argv(topology))

    def up() -> bool:
        if not processes.alive(process):
            raise ClusterError(f"{component.name} exited:\n{processes.log_tail(component.name)}")
        if component.health is None:
            return configs.CONTAINERD_SOCKET.exists() and subprocess.run(
                ["ctr", "--address", str(configs.CONTAINERD_SOCKET), "version"], capture_output=True).returncode == 0
        return _healthy(component.health(topology))

    wait_until(up, timeout=timeout, what=f"{component.name} to be healthy",
               diagnostics=lambda: processes.log_tail(component.name))


def _record_host_paths() -> None:
    if not HOST_PATHS_RECORD.exists():
        HOST_PATHS_RECORD.write_text(json.dumps({str(p): p.exists() for p in HOST_PATHS}))


def write_configs(topology: Topology, sandbox_image: str) -> None:
    for directory in (CONFIG_DIR, configs.CNI_CONF_DIR, configs.CNI_IPAM_DIR, configs.KUBELET_ROOT,
                      configs.POD_LOGS, configs.VOLUMES, LOGS, RUN):
        directory.mkdir(parents=True, exist_ok=True)
    pki.make_pki(PKI, topology)
    kubeconfigs = pki.write_kubeconfigs(PKI, CONFIG_DIR, topology)
    shutil.copyfile(kubeconfigs["admin"], KUBECONFIG)
    KUBECONFIG.chmod(0o600)
    (CONFIG_DIR / "containerd.toml").write_text(configs.containerd_config(sandbox_image))
    hosts = configs.CONTAINERD_HOSTS_DIR / configs.REGISTRY
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(configs.registry_hosts_toml())
    configs.REGISTRY_DATA.mkdir(parents=True, exist_ok=True)
    (CONFIG_DIR / "registry.yml").write_text(configs.registry_config())
    (configs.CNI_CONF_DIR / "10-celery-stack.conflist").write_text(configs.cni_conflist(topology))
    (CONFIG_DIR / "kubelet.yaml").write_text(configs.kubelet_config(topology))
    (CONFIG_DIR / "kube-proxy.yaml").write_text(configs.kube_proxy_config(topology, kubeconfigs["proxy"]))


def _node_ready(topology: Topology) -> bool:
    result = kubectl("get", "node", topology.node_name, "-o",
                     "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
    return result.stdout.strip() == "True"


def _cluster_state() -> str:
    parts = [kubectl("get", "nodes,pods", "-A", "-o", "wide", check=False).stdout,
             kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[-4000:]]
    return "\n".join(parts)


def crash_looping(namespace: str) -> str:
    """Containers of the namespace in CrashLoopBackOff, with their last log lines ("" when none)."""
    jsonpath = ("{range .items[*]}{.metadata.name}{' '}{range .status.containerStatuses[*]}"
                "{.state.waiting.reason}{' '}{end}{'\\n'}{end}")
    out = kubectl("-n", namespace, "get", "pods", "-o", f"jsonpath={jsonpath}", check=False).stdout
    crashing = [line.split()[0] for line in out.splitlines() if "CrashLoopBackOff" in line]
    return "\n".join(f"{pod}:\n" + kubectl("-n", namespace, "logs", pod, "--all-containers", "--tail=20",
                                           check=False).stdout for pod in crashing)


def install_addons(topology: Topology, image_refs: dict[str, str]) -> None:
    binary = kubectl_binary()
    for addon in addons.ADDONS:
        with step(f"add-on {addon.name}"):
            manifest = addon.render(topology, image_refs, binary)
            kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_text=manifest)
    for addon in addons.ADDONS:
        for namespace, deployment in addon.deployments:
            with step(f"waiting for {namespace}/{deployment}"):
                def available(n: str = namespace, d: str = deployment) -> bool:
                    crashing = crash_looping(n)
                    if crashing:  # no point waiting out the timeout
                        raise ClusterError(f"{n}/{d} is crash-looping:\n{crashing}")
                    # check: a name the manifest does not create fails here, not after the timeout
                    return kubectl("-n", n, "get", "deployment", d, "-o",
                                   "jsonpath={.status.availableReplicas}").stdout.strip() not in ("", "0")

                wait_until(available, timeout=300, what=f"{namespace}/{deployment} to be available",
                           diagnostics=_cluster_state)
        for service in addon.api_services:
            with step(f"waiting for APIService {service}"):
                wait_until(lambda s=service: kubectl(
                    "get", "apiservice", s, "-o", "jsonpath={.status.conditions[?(@.type=='Available')].status}",
                    check=False).stdout.strip() == "True",
                    timeout=300, what=f"APIService {service} to be Available", diagnostics=_cluster_state)


def shell_env() -> str:
    from tests.support.tools import TOOLS, helm_binary

    # Tilt's directory whether or not it is built yet: `make tilt-*` build it (its web UI takes minutes).
    tools = (kubectl_binary(), helm_binary("helm3"), TOOLS["tilt"].home / TOOLS["tilt"].executable)
    path = os.pathsep.join(str(tool.parent) for tool in tools)
    return (f"# Written by `make cluster-up`: source it to point kubectl, helm, tilt and docker at the local cluster.\n"
            f"export KUBECONFIG={KUBECONFIG}\n"
            f"export DOCKER_HOST=unix://{images.DOCKER_SOCKET}\n"
            f"export PATH={path}:$PATH\n")


def up() -> Topology:
    began = time.monotonic()
    topology = Topology()
    READY_MARKER.unlink(missing_ok=True)
    packages.ensure()
    build.build_all()
    STATE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    _record_host_paths()
    network.record_sysctls(SYSCTL_RECORD)
    image_refs = images.build_all()
    with step("certificates, kubeconfigs and configs"):
        write_configs(topology, image_refs["pause"])
    network.enable_forwarding()
    network.accept_pod_forwarding(topology)
    network.refuse_unrouted_service_traffic(topology)
    for component in COMPONENTS:
        with step(f"starting {component.name}"):
            _start(component, topology)
        if component.name == "containerd":
            images.import_all(configs.CONTAINERD_SOCKET)
    with step(f"waiting for node {topology.node_name} to be Ready"):
        wait_until(lambda: _node_ready(topology), timeout=180, what="the node to be Ready",
                   diagnostics=lambda: processes.log_tail("kubelet", 40))
    install_addons(topology, image_refs)
    project = images.project_image()
    build_args = "".join(f"{key}={value}\n" for key, value in images.project_build_args().items())
    IMAGES_ENV.write_text(f"IMAGE_REPOSITORY={project[0]}\nIMAGE_TAG={project[1]}\n{build_args}")
    SHELL_ENV.write_text(shell_env())
    READY_MARKER.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    say(f"cluster up in {time.monotonic() - began:.0f} s")
    version = build.by_name("kubernetes").version
    print(f"""
The local cluster is up (Kubernetes {version}, node {topology.node_name} at {topology.node_ip}).
  . {SHELL_ENV}     # KUBECONFIG, DOCKER_HOST (its dockerd) and PATH (kubectl, helm, tilt)
  kubectl get pods -A
  make tilt-up          # live development (builds Tilt once): images pushed to its registry {configs.REGISTRY}
  make cluster-test     # install the chart (helm v3 and v4) and run k8s-tests against it
  make cluster-down     # stop everything and put the host back as it was
Project image: {project[0]}:{project[1]} (values-examples/local-cluster.yaml names the others). Logs: {LOGS}
""")
    return topology
