"""The Makefile's cluster targets (mk/cluster.mk via the top-level Makefile), checked with `make -n`
and, for missing tools, run for real with an empty PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = dict(
    line.split("=", 1) for line in (ROOT / "k8s-tests/cluster/versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
KIND_IMAGE = yaml.safe_load((ROOT / "values-examples/kind.yaml").read_text())["image"]


def make(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    make_binary = shutil.which("make")
    if make_binary is None:
        pytest.fail("GNU make is not installed")
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([make_binary, "--no-print-directory", "-C", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def dry_run(target: str, *overrides: str) -> list[str]:
    done = make("-n", target, *overrides)
    assert done.returncode == 0, done.stderr
    # Join continuation lines: one entry per shell command.
    return done.stdout.replace("\\\n", " ").splitlines()


def commands_with(lines: list[str], text: str) -> list[str]:
    return [" ".join(line.split()) for line in lines if text in line]


def test_top_level_makefile_includes_the_cluster_fragment() -> None:
    assert "include mk/*.mk" in (ROOT / "Makefile").read_text()


def test_kind_up_creates_builds_loads_installs_and_waits() -> None:
    lines = dry_run("kind-up")
    image = f"{KIND_IMAGE['repository']}:{KIND_IMAGE['tag']}"
    assert KIND_IMAGE["tag"] not in ("", "latest") and KIND_IMAGE["pullPolicy"] == "IfNotPresent"
    (create,) = [c for c in commands_with(lines, "kind create cluster") if not c.startswith("echo")]
    assert f"--name celery-stack --config k8s-tests/cluster/kind.yaml --image {VERSIONS['KIND_NODE_IMAGE']}" in create
    assert commands_with(lines, "docker build") == [f"docker build -f docker/Dockerfile -t {image} ."]
    assert commands_with(lines, "kind load") == [f"kind load docker-image {image} --name celery-stack"]
    (keda,) = commands_with(lines, "helm upgrade --install keda")
    assert f"kedacore/keda --version {VERSIONS['KEDA_CHART_VERSION']} --namespace keda" in keda
    (chart,) = commands_with(lines, "helm upgrade --install celery-stack")
    assert "charts/celery-stack --namespace celery-stack --create-namespace -f values-examples/kind.yaml" in chart
    assert f"--set image.repository={KIND_IMAGE['repository']} --set image.tag={KIND_IMAGE['tag']}" in chart
    assert commands_with(lines, "--for=condition=Available")
    assert commands_with(lines, "rollout status")
    order = [next(i for i, line in enumerate(lines) if text in line)
             for text in ("kind create cluster", "docker build", "kind load", "install keda",
                          "install celery-stack", "--for=condition=Available")]
    assert order == sorted(order), "kind-up must create, build, load, install KEDA, install the chart, wait"


def test_latest_tag_is_refused() -> None:
    done = make("kind-up", "IMAGE_TAG=latest")
    assert done.returncode != 0
    assert done.stderr.startswith("error: IMAGE_TAG must be a fixed tag, not 'latest'"), done.stderr


def test_kind_test_runs_k8s_tests_requiring_a_cluster() -> None:
    (command,) = commands_with(dry_run("kind-test"), "pytest k8s-tests")
    assert "K8S_TESTS_REQUIRED=1 K8S_TESTS_RELEASE=celery-stack K8S_TESTS_NAMESPACE=celery-stack" in command


def test_kind_down_and_flower() -> None:
    assert commands_with(dry_run("kind-down"), "kind delete") == ["kind delete cluster --name celery-stack"]
    from portfolio_site.ports import FLOWER_PORT

    (flower,) = commands_with(dry_run("flower"), "k8s_support.cli flower")
    assert f"--release celery-stack --namespace celery-stack --local-port {FLOWER_PORT}" in flower


@pytest.mark.parametrize(("target", "tools"), [
    ("kind-up", ["kind", "docker", "helm", "kubectl"]),
    ("kind-test", ["kubectl", "helm"]),
    ("kind-down", ["kind"]),
    ("flower", ["kubectl"]),
])
def test_missing_tools_give_one_clear_line_each(target: str, tools: list[str], tmp_path: Path) -> None:
    # A machine with the usual utilities (and uv) but none of kind, docker, helm, kubectl.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for utility in ("sed", "grep", "python3", "uv", "env", "cat"):
        if found := shutil.which(utility):
            (bin_dir / utility).symlink_to(found)
    done = make(target, path=str(bin_dir))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: '{tool}' is not installed or not on PATH; install it: " + errors[i].split(": ", 2)[2]
                      for i, tool in enumerate(tools)]
    assert "Traceback" not in done.stderr + done.stdout


def test_flower_cli_reports_an_unreachable_cluster_clearly(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text('{"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": '
                          '{"server": "https://127.0.0.1:9"}}], "users": [{"name": "u", "user": {}}], '
                          '"contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], '
                          '"current-context": "x"}')
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "k8s-tests")}
    done = subprocess.run([sys.executable, "-m", "k8s_support.cli", "flower", "--local-port", "5555"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: API server of kube context x") and "not reachable" in done.stderr
    assert "Traceback" not in done.stderr
