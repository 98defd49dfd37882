"""The release under test: where it is, how its objects are labelled, and values its pods see.

Names are found through the chart's labels (app.kubernetes.io/instance, app.kubernetes.io/component,
celery-stack.io/pool) and secrets through the Deployments' own env references, so a renamed object
or Secret in the chart does not need a second edit here.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The chart's labels (charts/celery-stack/templates/_helpers.tpl).
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
POOL_LABEL = "celery-stack.io/pool"

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    context: str | None
    chart: Path
    values: tuple[Path, ...]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Release:
        """K8S_TESTS_RELEASE / _NAMESPACE / _CONTEXT / _CHART / _VALUES (what `make kind-up` installed)."""
        env = os.environ if environ is None else environ
        values = env.get("K8S_TESTS_VALUES", "values-examples/kind.yaml")
        return cls(
            name=env.get("K8S_TESTS_RELEASE", "celery-stack"),
            namespace=env.get("K8S_TESTS_NAMESPACE", "celery-stack"),
            context=env.get("K8S_TESTS_CONTEXT") or None,
            chart=REPO_ROOT / env.get("K8S_TESTS_CHART", "charts/celery-stack"),
            values=tuple(REPO_ROOT / v for v in values.split(",") if v.strip()),
        )

    def selector(self, component: str | None = None) -> str:
        """A label selector of this release's objects, optionally of one component."""
        parts = [f"{INSTANCE_LABEL}={self.name}"]
        if component:
            parts.append(f"{COMPONENT_LABEL}={component}")
        return ",".join(parts)

    def pool_selector(self, pool: str) -> str:
        return f"{self.selector('worker')},{POOL_LABEL}={pool}"


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand(value: str, environment: dict[str, str]) -> str:
    """Kubernetes dependent env expansion: ``$(NAME)`` of an earlier variable, ``$$`` for a dollar.

    An unknown ``$(NAME)`` stays as written, as the kubelet leaves it.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return environment.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


def container_environment(
    container: Any,
    *,
    secret: Callable[[str], dict[str, str]],
    config_map: Callable[[str], dict[str, str]],
) -> dict[str, str]:
    """The environment a V1Container's process starts with (envFrom, then env in order, expanded).

    ``secret(name)`` / ``config_map(name)`` return decoded data; a missing optional reference is
    skipped, a missing required one raises KeyError naming it.
    """
    environment: dict[str, str] = {}
    for source in container.env_from or []:
        prefix = source.prefix or ""
        if source.secret_ref is not None:
            ref, read = source.secret_ref, secret
        elif source.config_map_ref is not None:
            ref, read = source.config_map_ref, config_map
        else:
            continue
        try:
            data = read(ref.name)
        except KeyError:
            if ref.optional:
                continue
            raise
        environment.update({prefix + key: value for key, value in data.items()})
    for var in container.env or []:
        if var.value_from is None:
            environment[var.name] = expand(var.value or "", environment)
            continue
        key_ref = var.value_from.secret_key_ref or var.value_from.config_map_key_ref
        if key_ref is None:  # fieldRef / resourceFieldRef: values the kubelet fills in, not ours
            continue
        read = secret if var.value_from.secret_key_ref is not None else config_map
        try:
            environment[var.name] = read(key_ref.name)[key_ref.key]
        except KeyError:
            if key_ref.optional:
                continue
            raise KeyError(f"{var.name}: key {key_ref.key!r} of {key_ref.name!r} not found") from None
    return environment


def decode_secret_data(data: dict[str, str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


class ClusterReader:
    """Reads objects of the release through the official client (CoreV1Api + AppsV1Api)."""

    def __init__(self, core: Any, apps: Any, release: Release) -> None:
        self.core = core
        self.apps = apps
        self.release = release

    def _read(self, kind: str, read: Any, name: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return read(name, self.release.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(f"{kind} {self.release.namespace}/{name} not found") from None
            raise

    def secret(self, name: str) -> dict[str, str]:
        return decode_secret_data(self._read("Secret", self.core.read_namespaced_secret, name).data)

    def config_map(self, name: str) -> dict[str, str]:
        return dict(self._read("ConfigMap", self.core.read_namespaced_config_map, name).data or {})

    def deployments(self, component: str | None = None) -> list[Any]:
        return self.apps.list_namespaced_deployment(
            self.release.namespace, label_selector=self.release.selector(component)
        ).items

    def one_deployment(self, component: str) -> Any:
        found = self.deployments(component)
        if len(found) != 1:
            names = [d.metadata.name for d in found]
            raise AssertionError(f"expected one {component} Deployment of release {self.release.name}, "
                                 f"found {names} (selector {self.release.selector(component)})")
        return found[0]

    def environment(self, component: str, container_name: str) -> dict[str, str]:
        """The resolved environment of a component's container, from its Deployment's pod template."""
        deployment = self.one_deployment(component)
        containers = {c.name: c for c in deployment.spec.template.spec.containers}
        if container_name not in containers:
            raise AssertionError(f"{deployment.metadata.name} has no container {container_name!r}: "
                                 f"{sorted(containers)}")
        return container_environment(
            containers[container_name], secret=self.secret, config_map=self.config_map
        )

    def service(self, component: str) -> Any:
        services = self.core.list_namespaced_service(
            self.release.namespace, label_selector=self.release.selector(component)
        ).items
        if not services:
            raise AssertionError(f"no Service of component {component} (selector {self.release.selector(component)})")
        return services[0]

    def pods(self, selector: str, *, running_only: bool = True) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.release.namespace, label_selector=selector).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        if running_only:
            live = [p for p in live if p.status.phase == "Running"]
        return sorted(live, key=lambda p: p.metadata.name)


def service_port(service: Any, name: str = "http") -> int:
    """The Service port of the given name (the chart names its HTTP ports `http`, metrics `metrics`)."""
    ports: Iterable[Any] = service.spec.ports or []
    for port in ports:
        if port.name == name:
            return int(port.port)
    raise AssertionError(f"Service {service.metadata.name} has no port named {name!r}: "
                         f"{[(p.name, p.port) for p in service.spec.ports or []]}")
