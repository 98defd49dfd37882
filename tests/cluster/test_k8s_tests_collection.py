"""`pytest k8s-tests` collects cleanly and, with no reachable cluster, skips every test with the reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_k8s_tests(kubeconfig: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_TESTS_", "PYTEST_"))}
    environment.update(KUBECONFIG=str(kubeconfig), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "k8s-tests", *args], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=240, check=False)


def test_collects_every_scenario_without_error(dead_kubeconfig: Path) -> None:
    done = run_k8s_tests(dead_kubeconfig, "--collect-only", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    files = {Path(i.split("::")[0]).name for i in ids}  # ids are relative to k8s-tests/ (its pytest.ini)
    assert files == {f"test_{n}.py" for n in
                     ("release", "tasks", "beat", "flower", "metrics", "autoscaling", "worker_loss", "upgrade")}
    assert sum("test_task_succeeds_on_its_queues_pool[" in i for i in ids) == 7


def test_without_a_cluster_everything_is_skipped_with_the_reason(dead_kubeconfig: Path) -> None:
    done = run_k8s_tests(dead_kubeconfig, "-rs", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped in [\d.]+s", summary), summary
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("no Kubernetes cluster reachable" in line for line in reasons)
    assert all("kube context kind-gone" in line and "not reachable" in line and "make kind-up" in line
               for line in reasons), reasons[0]


def test_required_cluster_missing_is_an_error_not_a_skip(dead_kubeconfig: Path) -> None:
    done = run_k8s_tests(dead_kubeconfig, "-q", K8S_TESTS_REQUIRED="1")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "K8S_TESTS_REQUIRED=1 but no Kubernetes cluster reachable" in done.stdout + done.stderr
