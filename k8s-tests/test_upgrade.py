"""`helm upgrade` with a changed value rolls the application pods; `helm test` then passes."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.release import ClusterReader, Release
from k8s_support.waiting import wait_for
from k8s_support.workloads import rollout_problem


def helm(release: Release, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("helm")
    if binary is None:
        pytest.fail("helm is not on PATH: the upgrade test runs `helm upgrade` and `helm test`")
    argv = [binary, *args, "--namespace", release.namespace]
    if release.context:
        argv += ["--kube-context", release.context]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"`{' '.join(argv)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def template_hashes(reader: ClusterReader) -> dict[str, str]:
    """Deployment -> hash of its pod template's checksum annotations (what a values change moves)."""
    return {
        d.metadata.name: str(sorted((d.spec.template.metadata.annotations or {}).items()))
        for d in reader.deployments()
    }


@pytest.mark.upgrade
@pytest.mark.timeout(1200)
def test_helm_upgrade_rolls_pods_and_helm_test_passes(
    release: Release, reader: ClusterReader, core: Any, dump: Callable[[], str]
) -> None:
    before = template_hashes(reader)
    old_pods = {p.metadata.name for p in reader.pods(release.selector())
                if p.metadata.labels.get("app.kubernetes.io/component") not in ("redis", "postgresql")}
    marker = uuid.uuid4().hex[:12]

    helm(release, "upgrade", release.name, str(release.chart), "--reuse-values",
         "--set-string", f"app.env.K8S_TESTS_ROLLOUT={marker}", "--wait", "--timeout", "10m", timeout=900)

    after = template_hashes(reader)
    unchanged = sorted(name for name in before if after.get(name) == before[name])
    assert not unchanged, f"a changed app.env value did not change the pod template of {unchanged}"

    def rolled() -> bool:
        if any(rollout_problem(d) for d in reader.deployments()):
            return False
        running = {p.metadata.name for p in reader.pods(release.selector(), running_only=False)}
        return not (running & old_pods)

    wait_for(rolled, timeout=600, interval=5, description="every Deployment to replace its pods",
             diagnostics=dump)
    assert reader.environment("web", "web").get("K8S_TESTS_ROLLOUT") == marker, "the value did not reach web"

    helm(release, "test", release.name, "--timeout", "5m", "--logs", timeout=400)
