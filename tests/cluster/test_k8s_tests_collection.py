"""`pytest k8s-tests` collects cleanly and, with no reachable cluster, skips every test with the reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from localcluster.suite import RUNS

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
                     ("release", "tasks", "beat", "flower", "metrics", "autoscaling", "worker_loss", "upgrade",
                      "keda", "logs", "migrations", "scale_to_zero", "redis_restart", "scale_down", "uninstall",
                      "network_policy", "pod_security", "api_tokens", "redis_failover")}
    assert sum("test_task_succeeds_on_its_queues_pool[" in i for i in ids) == 7
    # Tilt's release of its own runs only when asked for (`make tilt-test`: -m tilt).
    tilt = run_k8s_tests(dead_kubeconfig, "--collect-only", "-q", "-m", "tilt")
    assert {Path(line.split("::")[0]).name for line in tilt.stdout.splitlines() if "::" in line} == {"test_tilt.py"}


def test_without_a_cluster_everything_is_skipped_with_the_reason(dead_kubeconfig: Path) -> None:
    done = run_k8s_tests(dead_kubeconfig, "-rs", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped(, \d+ deselected)? in [\d.]+s", summary), summary  # deselected: -m tilt
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("no Kubernetes cluster reachable" in line for line in reasons)
    assert all("kube context kind-gone" in line and "not reachable" in line and "make kind-up" in line
               for line in reasons), reasons[0]


def test_required_cluster_missing_is_an_error_not_a_skip(dead_kubeconfig: Path) -> None:
    done = run_k8s_tests(dead_kubeconfig, "-q", K8S_TESTS_REQUIRED="1")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "K8S_TESTS_REQUIRED=1 but no Kubernetes cluster reachable" in done.stdout + done.stderr


def test_with_a_cluster_the_suite_ends_with_upgrades_then_uninstall(tmp_path: Path) -> None:
    """Plain checks first, then the disruptive ones, the upgrades, and `helm uninstall` last; selections that
    spare the release (`not upgrade`: Tilt's button, the docs' read-only run) leave the uninstall out."""
    from tests.cluster.kubefake import fake_api

    version = {"major": "1", "minor": "34", "gitVersion": "v1.34.4", "gitCommit": "0", "gitTreeState": "clean",
               "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}
    with fake_api({"/version/": version}) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(textwrap.dedent(f"""
            apiVersion: v1
            kind: Config
            clusters: [{{name: c, cluster: {{server: "{api.configuration.host}"}}}}]
            users: [{{name: u, user: {{token: t}}}}]
            contexts: [{{name: fake, context: {{cluster: c, user: u}}}}]
            current-context: fake
        """))
        # Each collection is a pytest process of its own (~10 s, mostly imports): run them side by side.
        selections = {"everything": (), "spared": ("-m", "not disruptive and not upgrade"),
                      **{run.name: ("-m", run.markers) for run in RUNS}}
        with ThreadPoolExecutor(len(selections)) as pool:
            collected = dict(zip(selections, pool.map(
                lambda args: run_k8s_tests(kubeconfig, "--collect-only", "-q", *args), selections.values()),
                strict=True))
        everything, spared = collected.pop("everything"), collected.pop("spared")
        runs = collected
    assert everything.returncode == 0, everything.stdout + everything.stderr
    ids = [line for line in everything.stdout.splitlines() if "::" in line]
    files = [Path(i.split("::")[0]).stem.removeprefix("test_") for i in ids]
    assert files[-1] == "uninstall", ids[-3:]
    upgrades = [n for n, f in enumerate(files) if f == "upgrade" or "waits_for_a_database" in ids[n]]
    disruptive = [n for n, f in enumerate(files) if f in ("autoscaling", "worker_loss", "scale_down", "redis_restart",
                                                          "scale_to_zero") or "losing_the_primary" in ids[n]]
    plain = [n for n, f in enumerate(files) if f in ("release", "tasks", "keda", "logs", "flower")]
    assert max(plain) < min(disruptive) and max(disruptive) < min(upgrades) and max(upgrades) < len(ids) - 1
    assert "uninstall" not in spared.stdout and "test_upgrade" not in spared.stdout
    assert "test_keda.py" in spared.stdout

    # `make cluster-test`'s releases: only the Sentinel one runs the failover tests, and it neither upgrades nor
    # uninstalls; the helm v4 release runs everything else, the helm v3 one the read-only checks + uninstall.
    selected = {name: {Path(line.split("::")[0]).stem.removeprefix("test_") for line in done.stdout.splitlines()
                       if "::" in line} for name, done in runs.items()}
    assert all(done.returncode == 0 for done in runs.values()), {n: d.stdout[-500:] for n, d in runs.items()}
    assert selected["helm4"] == set(files) - {"redis_failover"}
    assert "redis_failover" not in selected["helm3"] and {"uninstall", "keda"} <= selected["helm3"]
    assert "worker_loss" not in selected["helm3"]
    assert {"redis_failover", "keda", "tasks", "network_policy"} <= selected["sentinel"]
    assert not selected["sentinel"] & {"upgrade", "uninstall", "worker_loss", "redis_restart", "tilt"}
