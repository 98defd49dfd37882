"""Throwaway probe pods for network checks: a TCP client that reports which addresses it could open.

They carry no label of the release (so its NetworkPolicies treat them as strangers), run the release's
own image with the chart's restricted security context, and are deleted by the test that made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROBE_LABEL = "k8s-tests.celery-stack.io/probe"

#: `python -c` program: try each host:port argument once (3 s) and print {"host:port": "open" | error}.
CONNECT = """
import json, socket, sys
result = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        result[target] = "open"
    except OSError as exc:
        result[target] = f"{type(exc).__name__}: {exc}"
print("PROBE=" + json.dumps(result), flush=True)
"""


def probe_pod(name: str, image: str, role: str, args: Sequence[str],
              labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A one-container pod running ``args`` in ``image`` as an unprivileged user on a read-only root;
    ``labels`` (e.g. a release role's, to show what the labels alone open) besides its probe label."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**(labels or {}), PROBE_LABEL: role}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "args": list(args),
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "200m", "memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def deny_all_ingress(name: str, role: str) -> dict[str, Any]:
    """A NetworkPolicy that admits no ingress at all to the probe pods of ``role``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": {PROBE_LABEL: role}},
        "spec": {"podSelector": {"matchLabels": {PROBE_LABEL: role}}, "policyTypes": ["Ingress"]},
    }
