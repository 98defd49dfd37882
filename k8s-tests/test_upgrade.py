"""`helm upgrade` restarts nothing when nothing changed, rolls the pods when a value changed; `helm test --logs`.

Helm is $K8S_TESTS_HELM (v3 or v4; default `helm` on PATH): `make cluster-test` runs these with both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.helm import run_helm
from k8s_support.release import ClusterReader, Release
from k8s_support.restarts import restarted, snapshot
from k8s_support.waiting import wait_for
from k8s_support.workloads import rollout_problem


def template_hashes(reader: ClusterReader) -> dict[str, str]:
    """Deployment -> hash of its pod template's checksum annotations (what a values change moves)."""
    return {
        d.metadata.name: str(sorted((d.spec.template.metadata.annotations or {}).items()))
        for d in reader.deployments()
    }


def wait_rolled_out(reader: ClusterReader, dump: Callable[[], str], timeout: float = 600) -> None:
    def problems() -> list[str]:
        return [p for d in reader.deployments() if (p := rollout_problem(d))]

    wait_for(lambda: not problems(), timeout=timeout, interval=3, description="every Deployment to be rolled out",
             diagnostics=lambda: f"not rolled out: {problems()}\n{dump()}")


@pytest.mark.upgrade
@pytest.mark.timeout(1200)
def test_helm_upgrade_without_changes_restarts_nothing(
    release: Release, reader: ClusterReader, apps: Any, core: Any, dump: Callable[[], str]
) -> None:
    """Issue 10, observation 4: the first `helm upgrade` restarted everything, Redis and PostgreSQL included,
    though nothing changed (the checksum/secret annotations hashed freshly generated random passwords).
    `helm upgrade --reuse-values` with no change must leave every Deployment and StatefulSet on its
    template revision with the very same pods (UIDs)."""
    wait_rolled_out(reader, dump)
    before = snapshot(apps, core, release)
    assert any(name.startswith("StatefulSet/") for name in before), f"no StatefulSet of the release: {sorted(before)}"

    run_helm(release, "upgrade", release.name, str(release.chart), "--reuse-values", "--wait", "--timeout", "10m",
             timeout=900)

    after = snapshot(apps, core, release)
    changed = restarted(before, after)
    assert not changed, "an upgrade that changed nothing restarted workloads:\n" + "\n".join(changed)


@pytest.mark.upgrade
@pytest.mark.timeout(1200)
def test_helm_upgrade_rolls_pods(release: Release, reader: ClusterReader, dump: Callable[[], str]) -> None:
    """`helm upgrade` with a changed value rolls every application Deployment to pods that see the value."""
    before = template_hashes(reader)
    old_pods = {p.metadata.name for p in reader.pods(release.selector())
                if p.metadata.labels.get("app.kubernetes.io/component") not in ("redis", "postgresql")}
    marker = uuid.uuid4().hex[:12]

    run_helm(release, "upgrade", release.name, str(release.chart), "--reuse-values",
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


@pytest.mark.upgrade
@pytest.mark.timeout(900)
def test_helm_test_passes_and_prints_its_log(release: Release, reader: ClusterReader, dump: Callable[[], str]) -> None:
    """Issue 10, observation 6: `helm test --logs` exited 1 although the test passed (hook-succeeded deleted
    the Pod before helm read its log). It must pass and print the test Pod's log, twice in a row (the
    second run replaces the first run's Pod: hook-delete-policy before-hook-creation)."""
    wait_rolled_out(reader, dump)
    for attempt in (1, 2):
        result = run_helm(release, "test", release.name, "--timeout", "5m", "--logs", timeout=400)
        output = result.stdout + result.stderr
        assert "POD LOGS" in output and "task(s) succeeded" in output, f"`helm test --logs` run {attempt}:\n{output}"
