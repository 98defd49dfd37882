"""Throwaway probe pods for network checks: a TCP client that reports which addresses it could open.

They carry no label of the release (so its NetworkPolicies treat them as strangers), run the release's
own image with the chart's restricted security context, and are deleted by the test that made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROBE_LABEL = "k8s-tests.celery-stack.io/probe"

#: Seconds a probe keeps trying before it reports. A policy agent that programs the host's firewall
#: (kube-router, on the local cluster) applies a new policy, or admits a new pod, once its sets are updated:
#: a moment later (0.6 s measured on the idle local cluster), so one attempt would race it.
SETTLE_SECONDS = 20

_PROGRAM = """
import json, socket, sys, time
wanted = sys.argv[1]  # "open": try a target until it opens; "refused": until it does not
deadline = time.monotonic() + SETTLE_SECONDS
result = {target: "not tried" for target in sys.argv[2:]}
def settled(seen):
    return (seen == "open") == (wanted == "open")
while True:
    for target in [t for t, seen in result.items() if seen == "not tried" or not settled(seen)]:
        host, port = target.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            result[target] = "open"
        except OSError as exc:
            result[target] = f"{type(exc).__name__}: {exc}"
    if all(settled(seen) for seen in result.values()) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("PROBE=" + json.dumps(result), flush=True)
""".replace("SETTLE_SECONDS", str(SETTLE_SECONDS))


def connect_args(targets: Sequence[str], *, until: str = "open") -> list[str]:
    """A probe's command: try every ``host:port`` of ``targets`` until it opens (``until="open"``: what stays
    closed for SETTLE_SECONDS is closed) or until it is refused (``until="refused"``: what still opens after
    SETTLE_SECONDS is open), and print ``PROBE={"host:port": "open" | the error}``."""
    return ["python", "-c", _PROGRAM, until, *targets]


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
