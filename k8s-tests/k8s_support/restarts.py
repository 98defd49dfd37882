"""Which workloads of a release restarted between two snapshots (for "an upgrade that changes nothing").

A snapshot holds, per Deployment and StatefulSet, its template revision (the Deployment's
``deployment.kubernetes.io/revision``, the StatefulSet's ``status.updateRevision``), its replicas and
the UIDs of its pods. A workload restarted when its revision moved, or when it kept its replica count
but its pods are not the same pods any more (a deleted or replaced pod). A replica count that moved
(KEDA scaling a pool meanwhile) is not a restart as long as the revision held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from k8s_support.release import Release

DEPLOYMENT_REVISION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class WorkloadState:
    revision: str
    replicas: int
    pods: frozenset[str]


def selector_string(match_labels: Mapping[str, str]) -> str:
    """A label selector string of a workload's ``spec.selector.matchLabels``."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def restarted(before: Mapping[str, WorkloadState], after: Mapping[str, WorkloadState]) -> list[str]:
    """One line per workload that restarted (or appeared, or went away) between the snapshots."""
    problems = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            problems.append(f"{name}: {'appeared' if old is None else 'went away'}")
        elif old.revision != new.revision:
            problems.append(f"{name}: template revision {old.revision} -> {new.revision} (pods replaced)")
        elif old.replicas == new.replicas and old.pods != new.pods:
            gone, came = sorted(old.pods - new.pods), sorted(new.pods - old.pods)
            problems.append(f"{name}: same revision {old.revision} but pods replaced (gone {gone}, new {came})")
    return problems


def snapshot(apps: Any, core: Any, release: Release) -> dict[str, WorkloadState]:
    """``Kind/name`` -> state of every Deployment and StatefulSet of the release (live pods only)."""
    states: dict[str, WorkloadState] = {}
    selector = release.selector()
    workloads = [("Deployment", d) for d in apps.list_namespaced_deployment(release.namespace,
                                                                             label_selector=selector).items]
    workloads += [("StatefulSet", s) for s in apps.list_namespaced_stateful_set(release.namespace,
                                                                                label_selector=selector).items]
    for kind, workload in workloads:
        if kind == "Deployment":
            revision = (workload.metadata.annotations or {}).get(DEPLOYMENT_REVISION, "?")
        else:
            revision = workload.status.update_revision or "?"
        pods = core.list_namespaced_pod(
            release.namespace, label_selector=selector_string(workload.spec.selector.match_labels)
        ).items
        states[f"{kind}/{workload.metadata.name}"] = WorkloadState(
            revision=revision,
            replicas=workload.spec.replicas if workload.spec.replicas is not None else 1,
            pods=frozenset(p.metadata.uid for p in pods if p.metadata.deletion_timestamp is None),
        )
    return states
