"""`helm uninstall` leaves nothing of the release but what the chart keeps on purpose. The END of the suite.

This runs last (conftest.ORDER_MARKERS: `uninstall` after `upgrade`) and does not reinstall: after it the
release is gone, and the runner deletes the namespace (with the kept Secrets and volumes). It is marked
`upgrade` too, so every selection that spares the release (`-m 'not disruptive and not upgrade'`, Tilt's
cluster-tests button) leaves it out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.helm import manifest_objects, run_helm
from k8s_support.leftovers import kept_on_uninstall, labelled_objects, leftovers
from k8s_support.release import Release
from k8s_support.waiting import wait_for


@pytest.mark.upgrade
@pytest.mark.uninstall
@pytest.mark.timeout(900)
def test_helm_uninstall_leaves_only_the_kept_secrets_and_volumes(
    release: Release, api_client: Any, core: Any, dump: Callable[[], str]
) -> None:
    """Issue 10, point 3 ("`helm uninstall` leaves nothing but what the docs say it keeps"): the chart keeps
    the generated Redis and PostgreSQL password Secrets (`helm.sh/resource-policy: keep`: the data on the
    volumes still uses them) and Kubernetes keeps the StatefulSets' PersistentVolumeClaims. Every other
    object of every namespaced kind labelled with the release's instance must be gone, and those kept
    must still be there (the `helm test` Pod only if a `helm test` ran). The end of the suite: nothing runs
    against the release after this."""
    kept = kept_on_uninstall(manifest_objects(run_helm(release, "get", "manifest", release.name, timeout=120).stdout))
    hook_objects = manifest_objects(run_helm(release, "get", "hooks", release.name, timeout=120).stdout)
    hooks = {(o["kind"], o["metadata"]["name"]) for o in hook_objects}
    # The `helm test` Pod stays after it ran (so `helm test --logs` can read it; docs/cluster.md) and
    # Helm never deletes hooks on uninstall: documented as kept until the namespace goes.
    kept |= {(o["kind"], o["metadata"]["name"]) for o in hook_objects
             if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"}
    assert any(kind == "Secret" for kind, _ in kept) and any(kind == "PersistentVolumeClaim" for kind, _ in kept), (
        f"the manifest keeps {sorted(kept)}: expected the Redis/PostgreSQL Secrets and the StatefulSets' PVCs")

    run_helm(release, "uninstall", release.name, "--wait", "--timeout", "10m", timeout=900)

    found: list[tuple[str, str]] = []

    def only_kept_left() -> bool:
        found[:] = labelled_objects(api_client, release.namespace, release.selector())
        return not leftovers(found, kept)

    def unexpected() -> str:
        return ", ".join(f"{kind}/{name}" + (" (a Helm hook: helm uninstall never deletes hooks, only their "
                                             "hook-delete-policy does)" if (kind, name) in hooks else "")
                         for kind, name in leftovers(found, kept))

    wait_for(only_kept_left, timeout=300, interval=5, diagnostics=lambda: f"left over: {unexpected()}\n{dump()}",
             description=f"only {sorted(kept)} to be left of release {release.name}")
    missing = sorted(ref for ref in kept - set(found) if ref not in hooks)
    assert not missing, f"`helm uninstall` deleted what the chart keeps on purpose: {missing}"
    storage = core.list_namespaced_secret(release.namespace, label_selector=f"owner=helm,name={release.name}").items
    assert not storage, f"Helm's release records are still there: {[s.metadata.name for s in storage]}"
