"""Build the cluster's binaries from their Go modules into a cache outside the clone.

One mechanism for every component: download the module at its pinned version, copy it somewhere
writable, point each local-path `replace` (Kubernetes' ./staging, etcd's ../api) at the published
module of the same release, and `go build` the commands. `go install mod@version` cannot be used:
it refuses modules with replace directives. A stamp per component makes a second run a no-op; with a
warm Go build cache a rebuild is link time only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import versions
from localcluster.paths import CACHE
from localcluster.progress import heartbeat, step
from tests.support.gomodules import go_build, module_source, rewrite_local_replaces, writable_copy


@dataclass(frozen=True)
class GoComponent:
    """Commands built from one Go module (one `go build`, so shared packages compile once)."""

    name: str
    module: str
    version: str
    #: package directory (relative to the module root) -> output binary name
    commands: dict[str, str]
    #: module path prefix of local replaces -> the version to use instead
    local_replace_version: str = ""
    ldflags: tuple[str, ...] = ()
    #: sub-directory of the module copy the build runs in (etcd's main lives in server/)
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return CACHE / "bin" / self.name

    def binary(self, command: str) -> Path:
        return self.bin_dir / command

    def fingerprint(self) -> str:
        text = json.dumps([self.module, self.version, self.commands, self.local_replace_version, self.ldflags,
                           self.workdir, sorted(self.env.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kubernetes() -> GoComponent:
    version = versions.get("KUBERNETES_VERSION")
    major, minor = version.lstrip("v").split(".")[:2]
    # Without these, every binary reports v0.0.0 and helm's kubeVersion checks fail.
    stamp = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamp += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    commands = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
    return GoComponent(
        name="kubernetes", module="k8s.io/kubernetes", version=version,
        commands={f"./cmd/{c}": c for c in commands},
        # staging modules are published as k8s.io/X v0.<minor>.<patch>
        local_replace_version="v0." + version.lstrip("v").split(".", 1)[1],
        ldflags=tuple(stamp),
    )


def _etcd() -> GoComponent:
    version = versions.get("ETCD_VERSION")
    return GoComponent(name="etcd", module="go.etcd.io/etcd/server/v3", version=version,
                       commands={".": "etcd"}, local_replace_version=version)


def _keda() -> GoComponent:
    version = versions.get("KEDA_VERSION")
    return GoComponent(
        name="keda", module="github.com/kedacore/keda/v2", version=version,
        commands={"./cmd/operator": "keda-operator", "./cmd/adapter": "keda-adapter",
                  "./cmd/webhooks": "keda-admission-webhooks"},
        ldflags=(f"-X github.com/kedacore/keda/v2/version.Version={version.lstrip('v')}",),
    )


def _coredns() -> GoComponent:
    return GoComponent(name="coredns", module="github.com/coredns/coredns",
                       version=versions.get("COREDNS_VERSION"), commands={".": "coredns"})


def _metrics_server() -> GoComponent:
    return GoComponent(name="metrics-server", module="sigs.k8s.io/metrics-server",
                       version=versions.get("METRICS_SERVER_VERSION"),
                       commands={"./cmd/metrics-server": "metrics-server"})


def _local_path_provisioner() -> GoComponent:
    return GoComponent(name="local-path-provisioner", module="github.com/rancher/local-path-provisioner",
                       version=versions.get("LOCAL_PATH_PROVISIONER_VERSION"),
                       commands={".": "local-path-provisioner"})


def _kube_router() -> GoComponent:
    return GoComponent(name="kube-router", module="github.com/cloudnativelabs/kube-router/v2",
                       version=versions.get("KUBE_ROUTER_VERSION"), commands={"./cmd/kube-router": "kube-router"})


def components() -> list[GoComponent]:
    """Every component, the largest first (its build shows progress the longest)."""
    return [_kubernetes(), _etcd(), _keda(), _coredns(), _kube_router(), _metrics_server(), _local_path_provisioner()]


def by_name(name: str) -> GoComponent:
    for component in components():
        if component.name == name:
            return component
    raise KeyError(name)


def build(component: GoComponent, *, force: bool = False) -> Path:
    """Build the component's commands into CACHE/bin/<name>/ unless its stamp says they are there."""
    stamp = component.bin_dir / ".stamp"
    wanted = component.fingerprint()
    if not force and stamp.is_file() and stamp.read_text().strip() == wanted and all(
            component.binary(name).is_file() for name in component.commands.values()):
        return component.bin_dir
    label = f"{component.name} {component.version} ({', '.join(component.commands.values())})"
    with step(f"go build {label}"):
        source = module_source(component.module, component.version)
        work = writable_copy(source, CACHE / "src" / f"{component.name}-{component.version}")
        if component.local_replace_version:
            rewrite_local_replaces(work, component.local_replace_version)
        out_dir = CACHE / "build" / component.name
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        single = len(component.commands) == 1
        output = str(out_dir / next(iter(component.commands.values()))) if single else f"{out_dir}/"
        with heartbeat(f"  compiling {component.name}", every=30.0):
            result = go_build(work / component.workdir, list(component.commands), output,
                              ldflags=" ".join(("-s", "-w", *component.ldflags)),
                              env={"CGO_ENABLED": "0", **component.env})
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise RuntimeError(f"go build of {label} failed (exit {result.returncode})")
        component.bin_dir.mkdir(parents=True, exist_ok=True)
        for package, name in component.commands.items():
            built = out_dir / (name if single else Path(package).name)
            shutil.move(built, component.binary(name))
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)  # the Go build cache keeps what a rebuild needs
        stamp.write_text(wanted + "\n")
    return component.bin_dir


def build_all(names: list[str] | None = None, *, force: bool = False) -> None:
    for component in components():
        if names and component.name not in names:
            continue
        build(component, force=force)


if __name__ == "__main__":
    build_all(sys.argv[1:] or None)
