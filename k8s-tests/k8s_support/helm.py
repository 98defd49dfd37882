"""The helm the tests run: $K8S_TESTS_HELM (a path or a name on PATH; default `helm`), v3 or v4 alike.

`make cluster-test` runs the suite once with helm v3 and once with helm v4 through this variable; every
test that calls helm (upgrade, test, uninstall, get) goes through ``run_helm``, which fails the test with
helm's own output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from k8s_support.release import Release

HELM_ENV = "K8S_TESTS_HELM"


class HelmNotFound(AssertionError):
    """The helm named by $K8S_TESTS_HELM (or `helm`) is not there: the test fails naming it."""


def helm_binary(
    environ: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which
) -> str:
    """The helm executable: $K8S_TESTS_HELM (a path, or a name looked up on PATH), else `helm` on PATH."""
    env = os.environ if environ is None else environ
    wanted = env.get(HELM_ENV, "").strip() or "helm"
    found = which(wanted)
    if found is None:
        origin = f"${HELM_ENV}={wanted!r}" if env.get(HELM_ENV, "").strip() else "`helm` on PATH (no $K8S_TESTS_HELM)"
        raise HelmNotFound(f"no helm executable: {origin} is not an executable; set {HELM_ENV} to helm v3 or v4")
    return found


def helm_argv(binary: str, release: Release, args: Sequence[str]) -> list[str]:
    """The command line of ``helm <args>`` against the release's namespace (and kube context, if set)."""
    argv = [binary, *args, "--namespace", release.namespace]
    if release.context:
        argv += ["--kube-context", release.context]
    return argv


def run_helm(
    release: Release, *args: str, timeout: float, check: bool = True, environ: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check`` a non-zero exit fails the test with the command line and helm's output."""
    argv = helm_argv(helm_binary(environ), release, args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, (
            f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def manifest_objects(text: str) -> list[dict[str, Any]]:
    """The objects of `helm get manifest` output (a multi-document YAML stream; empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]


def latest_deployed_revision(storage_labels: Iterable[Mapping[str, str]]) -> int | None:
    """The revision Helm marks ``deployed``, from the labels of its release storage Secrets (owner=helm,
    name=<release>, status, version); None when there is none (a release not installed by helm, e.g. Tilt)."""
    deployed = [int(labels["version"]) for labels in storage_labels
                if labels.get("status") == "deployed" and str(labels.get("version", "")).isdigit()]
    return max(deployed, default=None)


def deployed_revision(core: Any, release: Release) -> int | None:
    """The deployed revision of the release as Helm stored it (Secrets driver, helm v3 and v4)."""
    secrets = core.list_namespaced_secret(release.namespace, label_selector=f"owner=helm,name={release.name}").items
    return latest_deployed_revision(s.metadata.labels or {} for s in secrets)
