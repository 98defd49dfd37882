"""Every pod of the release passes the Pod Security Standard the namespace enforces.

On the local cluster (`make cluster-test`) the suite makes the namespace with
`pod-security.kubernetes.io/enforce=restricted` before `helm install --wait`, so the install itself
proves the chart's pods pass: admission refuses a non-compliant pod, and its controller never becomes
ready. This test checks the label is really there and really enforced — a pod that breaks the
standard is refused by the API server. Elsewhere (kind on GitHub) it runs when K8S_TESTS_POD_SECURITY
names the level the namespace enforces.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from k8s_support.probes import probe_pod
from k8s_support.release import ClusterReader, Release

LEVEL = os.environ.get("K8S_TESTS_POD_SECURITY", "")


def test_the_namespace_enforces_the_level_and_every_release_pod_runs_under_it(
    core: Any, reader: ClusterReader, release: Release
) -> None:
    # in the body, not a skipif mark: without a cluster every test skips for that reason alone (conftest)
    if not LEVEL:
        pytest.skip("K8S_TESTS_POD_SECURITY is not set: the namespace enforces no known level")
    labels = core.read_namespace(release.namespace).metadata.labels or {}
    assert labels.get("pod-security.kubernetes.io/enforce") == LEVEL, labels

    image = reader.one_deployment("web").spec.template.spec.containers[0].image
    compliant = probe_pod("k8s-tests-pss-ok", image, "pss", ["true"])
    core.create_namespaced_pod(release.namespace, compliant, dry_run="All")  # the probe itself passes

    breaking = probe_pod("k8s-tests-pss-root", image, "pss", ["true"])
    container = breaking["spec"]["containers"][0]
    container["securityContext"] = {"allowPrivilegeEscalation": True, "capabilities": {"add": ["NET_ADMIN"]}}
    breaking["spec"]["securityContext"] = {}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(release.namespace, breaking, dry_run="All")
    assert refused.value.status == 403 and "violates PodSecurity" in str(refused.value.body), refused.value.body

    pods = core.list_namespaced_pod(release.namespace, label_selector=release.selector()).items
    running = [pod.metadata.name for pod in pods if pod.status.phase == "Running"]
    assert running, f"no pod of the release runs in {release.namespace}"
