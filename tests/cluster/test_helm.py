"""k8s_support.helm: which helm the live tests run ($K8S_TESTS_HELM), its command line, Helm's records."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from k8s_support.helm import (
    HELM_ENV,
    HelmNotFound,
    helm_argv,
    helm_binary,
    latest_deployed_revision,
    manifest_objects,
    run_helm,
)
from k8s_support.release import Release

RELEASE = Release.from_env({"K8S_TESTS_NAMESPACE": "celery-stack-helm3"})


def fake_helm(tmp_path: Path, name: str = "helm") -> Path:
    """An executable that prints its argv and fails when asked to (`fail` anywhere in it)."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys\nprint(' '.join(sys.argv[1:]))\n"
                    "sys.exit(3 if 'fail' in sys.argv else 0)\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_env_names_the_helm_by_path_or_name(tmp_path: Path) -> None:
    helm4 = fake_helm(tmp_path, "helm4")
    assert helm_binary({HELM_ENV: str(helm4)}) == str(helm4)
    assert helm_binary({HELM_ENV: "helm4"}, which=lambda name: f"/opt/{name}") == "/opt/helm4"
    assert helm_binary({}, which=lambda name: f"/usr/bin/{name}") == "/usr/bin/helm"
    assert helm_binary({HELM_ENV: "  "}, which=lambda name: f"/usr/bin/{name}") == "/usr/bin/helm"


def test_a_missing_helm_fails_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(HelmNotFound, match=r"\$K8S_TESTS_HELM='/nowhere/helm' is not an executable"):
        helm_binary({HELM_ENV: "/nowhere/helm"})
    with pytest.raises(HelmNotFound, match="`helm` on PATH"):
        helm_binary({}, which=lambda name: None)


def test_argv_targets_the_release_namespace_and_context() -> None:
    assert helm_argv("helm", RELEASE, ["test", "celery-stack", "--logs"]) == [
        "helm", "test", "celery-stack", "--logs", "--namespace", "celery-stack-helm3"]
    with_context = Release.from_env({"K8S_TESTS_CONTEXT": "kind-x"})
    assert helm_argv("helm", with_context, ["status", "r"])[-2:] == ["--kube-context", "kind-x"]


def test_run_helm_fails_with_its_output(tmp_path: Path) -> None:
    env = {**os.environ, HELM_ENV: str(fake_helm(tmp_path))}
    assert run_helm(RELEASE, "status", "celery-stack", timeout=30, environ=env).stdout.startswith("status celery-stack")
    with pytest.raises(AssertionError, match=r"failed \(3\):\nfail --namespace celery-stack-helm3"):
        run_helm(RELEASE, "fail", timeout=30, environ=env)
    assert run_helm(RELEASE, "fail", timeout=30, check=False, environ=env).returncode == 3


def test_manifest_objects_skip_empty_documents() -> None:
    text = "---\n# Source: x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\n\n"
    assert manifest_objects(text) == [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}]


def test_deployed_revision_from_helm_storage_labels() -> None:
    labels = [{"owner": "helm", "name": "r", "status": "superseded", "version": "1"},
              {"owner": "helm", "name": "r", "status": "deployed", "version": "3"},
              {"owner": "helm", "name": "r", "status": "pending-upgrade", "version": "4"}]
    assert latest_deployed_revision(labels) == 3
    assert latest_deployed_revision([]) is None
