"""Is a cluster reachable? Load the kubeconfig from the environment and ask the API server its version."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """The outcome of one reachability check: a client when reachable, a reason either way."""

    client: Any | None
    reason: str

    @property
    def reachable(self) -> bool:
        return self.client is not None


def probe(context: str | None = None, *, timeout: float = 5.0) -> Probe:
    """Build an ApiClient from $KUBECONFIG (or ~/.kube/config, or the in-cluster service account)
    and call GET /version with a short timeout. Never raises: the reason says what failed."""
    from kubernetes import client, config

    kubeconfig = os.environ.get("KUBECONFIG", "~/.kube/config")
    try:
        api_client = config.new_client_from_config(context=context)
        where = f"kube context {context or _current_context()} ({kubeconfig})"
    except (config.ConfigException, OSError, TypeError) as exc:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config()
            except config.ConfigException as exc2:
                return Probe(None, f"no usable kubeconfig ({exc}) and in-cluster config failed ({exc2})")
            api_client = client.ApiClient()
            where = "the in-cluster API server"
        else:
            return Probe(None, f"no usable kubeconfig at {kubeconfig}: {exc}")
    try:
        version = client.VersionApi(api_client).get_code(_request_timeout=timeout)
    except Exception as exc:
        api_client.close()
        return Probe(None, f"API server of {where} at {api_client.configuration.host} not reachable: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return Probe(api_client, f"Kubernetes {version.git_version} via {where}")


def _current_context() -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError):
        return "(unknown)"
    return active["name"] if active else "(none)"
