"""`make cluster-test`: install the chart on the local cluster with helm v3 and with helm v4, run k8s-tests.

helm v3 installs a release for the suite's read-only checks and its uninstall test; helm v4 installs the
release the whole k8s-tests suite runs against (it upgrades, disrupts and finally uninstalls it); a third
release, in Sentinel mode (values-examples/sentinel.yaml), runs the read-only checks and the failover tests
(test_redis_failover.py). Every install uses `--wait` with the chart's defaults plus the kind and
local-cluster values, reports how long it took to be Ready, and runs `helm test --logs`. A failure prints
the namespace's pods, events and log tails. CLUSTER_TEST_RUNS (e.g. `sentinel`, or `helm3,helm4`) picks runs.

Each namespace is made first with the Pod Security Standard `restricted` enforced, so an install that
succeeds proves every pod of the chart passes it (k8s-tests/test_pod_security.py must run, not skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.cluster import IMAGES_ENV, READY_MARKER, kubectl, kubectl_binary
from localcluster.paths import KUBECONFIG
from localcluster.progress import say, step

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "celery-stack"
VALUES = ("values-examples/kind.yaml", "values-examples/local-cluster.yaml")
#: Pod Security admission labels of the suite's namespaces (https://kubernetes.io/docs/concepts/security/pod-security-admission/)
POD_SECURITY_LEVEL = "restricted"


@dataclass(frozen=True)
class Run:
    name: str
    helm: str  # tests.support.tools name: helm3 or helm4
    release: str
    namespace: str
    #: pytest -m expression; it replaces pytest.ini's `-m "not tilt"`, so each keeps test_tilt.py (a release of
    #: its own) out too.
    markers: str
    values: tuple[str, ...] = VALUES


RUNS = (
    Run("helm3", "helm3", "celery-stack", "celery-stack-helm3",
        "((not disruptive and not upgrade) or uninstall) and not sentinel and not tilt"),
    Run("helm4", "helm4", "celery-stack", "celery-stack", "not sentinel and not tilt"),
    Run("sentinel", "helm4", "celery-stack", "celery-stack-sentinel",
        "(sentinel or not (disruptive or upgrade)) and not tilt", (*VALUES, "values-examples/sentinel.yaml")),
)
#: Runs to do, by name (comma-separated; all when unset).
RUNS_ENV = "CLUSTER_TEST_RUNS"


def _image() -> tuple[str, str]:
    values = dict(line.split("=", 1) for line in IMAGES_ENV.read_text().split())
    return values["IMAGE_REPOSITORY"], values["IMAGE_TAG"]


def _helm(run: Run) -> Path:
    from tests.support.tools import helm_binary

    return helm_binary(run.helm)


def _environment(run: Run) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(KUBECONFIG),
        "PATH": f"{kubectl_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "K8S_TESTS_REQUIRED": "1",
        "K8S_TESTS_RELEASE": run.release,
        "K8S_TESTS_NAMESPACE": run.namespace,
        "K8S_TESTS_VALUES": ",".join(run.values),
        "K8S_TESTS_HELM": str(_helm(run)),
        # what this cluster guarantees: the test of it fails instead of skipping
        "K8S_TESTS_POD_SECURITY": POD_SECURITY_LEVEL,
        # kube-router enforces NetworkPolicies here (components.kube_router): test_network_policy must not skip
        "K8S_TESTS_NETWORK_POLICY_ENFORCED": "1",
    }


def namespace_manifest(name: str) -> str:
    labels = "".join(f"\n    pod-security.kubernetes.io/{mode}: {POD_SECURITY_LEVEL}"
                     for mode in ("enforce", "audit", "warn"))
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:{labels}\n"


def diagnostics(namespace: str) -> str:
    parts = [kubectl("-n", namespace, "get", "all,pvc,scaledobjects", "-o", "wide", check=False).stdout,
             kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-6000:],
             kubectl("-n", namespace, "describe", "pods", check=False).stdout[-8000:]]
    pods = kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
    for pod in pods:
        logs = kubectl("-n", namespace, "logs", pod, "--all-containers", "--tail=40", check=False)
        parts.append(f"---- {pod}\n{logs.stdout}{logs.stderr}")
    return "\n".join(parts)


def install(run: Run) -> float:
    """`helm install --wait` with the test values; returns seconds until every resource was ready."""
    repository, tag = _image()
    argv = [str(_helm(run)), "upgrade", "--install", run.release, str(CHART), "--namespace", run.namespace,
            "--create-namespace", *[a for v in run.values for a in ("-f", str(ROOT / v))],
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--wait", "--timeout", "10m"]
    kubectl("apply", "-f", "-", input_text=namespace_manifest(run.namespace))
    began = time.monotonic()
    with step(f"{run.name}: {run.helm} install --wait {run.release} -n {run.namespace} "
              f"(pod security {POD_SECURITY_LEVEL})"):
        result = subprocess.run(argv, env=_environment(run), capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout + result.stderr, diagnostics(run.namespace), sep="\n", file=sys.stderr)
            raise SystemExit(f"{run.name}: {run.helm} install failed ({result.returncode})")
    took = time.monotonic() - began
    say(f"{run.name}: every resource of {run.release} ready {took:.0f} s after `helm install`")
    return took


def helm_test(run: Run) -> int:
    with step(f"{run.name}: helm test --logs {run.release}"):
        result = subprocess.run([str(_helm(run)), "test", run.release, "--namespace", run.namespace, "--logs",
                                 "--timeout", "5m"], env=_environment(run), capture_output=True, text=True)
    print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
    if result.returncode != 0:
        print(diagnostics(run.namespace), file=sys.stderr)
    return result.returncode


def run_tests(run: Run, extra: list[str]) -> int:
    argv = [sys.executable, "-m", "pytest", "k8s-tests", "-v", "-rs", "-p", "no:cacheprovider", "-m", run.markers]
    with step(f"{run.name}: k8s-tests -m {run.markers!r}"):
        code = subprocess.run([*argv, *extra], env=_environment(run), cwd=ROOT).returncode
    if code != 0:
        print(diagnostics(run.namespace), file=sys.stderr)
    return code


def cleanup(run: Run) -> None:
    subprocess.run([str(_helm(run)), "uninstall", run.release, "--namespace", run.namespace, "--wait"],
                   env=_environment(run), capture_output=True)
    kubectl("delete", "namespace", run.namespace, "--ignore-not-found", "--wait=true", check=False, timeout=300)


def main(extra: list[str]) -> int:
    if not READY_MARKER.exists():
        print("no local cluster: run `make cluster-up` first", file=sys.stderr)
        return 2
    wanted = [name.strip() for name in os.environ.get(RUNS_ENV, "").split(",") if name.strip()]
    unknown = set(wanted) - {run.name for run in RUNS}
    if unknown:
        print(f"{RUNS_ENV}: no run named {sorted(unknown)} (runs: {[run.name for run in RUNS]})", file=sys.stderr)
        return 2
    failures = 0
    for run in (r for r in RUNS if not wanted or r.name in wanted):
        install(run)
        failures += helm_test(run) != 0
        failures += run_tests(run, extra) != 0
        cleanup(run)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
