"""k8s_support.restarts, .logs and .podexec: pure judgements of the upgrade, log and exec checks."""

from __future__ import annotations

import pytest

from k8s_support.logs import offending_lines
from k8s_support.podexec import marked_json
from k8s_support.restarts import WorkloadState, restarted, selector_string


def state(revision: str, replicas: int, *pods: str) -> WorkloadState:
    return WorkloadState(revision, replicas, frozenset(pods))


def test_same_revision_and_pods_is_no_restart() -> None:
    before = {"Deployment/web": state("1", 1, "a"), "StatefulSet/redis": state("redis-5f", 1, "r")}
    assert restarted(before, dict(before)) == []


def test_a_new_revision_or_replaced_pods_are_restarts() -> None:
    before = {"Deployment/web": state("1", 1, "a"), "StatefulSet/redis": state("redis-5f", 1, "r")}
    after = {"Deployment/web": state("2", 1, "b"), "StatefulSet/redis": state("redis-5f", 1, "r2")}
    assert restarted(before, after) == [
        "Deployment/web: template revision 1 -> 2 (pods replaced)",
        "StatefulSet/redis: same revision redis-5f but pods replaced (gone ['r'], new ['r2'])",
    ]
    assert restarted(before, {"Deployment/web": before["Deployment/web"]}) == ["StatefulSet/redis: went away"]


def test_keda_moving_a_pools_replicas_is_not_a_restart() -> None:
    before = {"Deployment/worker-low": state("1", 1, "w1")}
    assert restarted(before, {"Deployment/worker-low": state("1", 0)}) == []


def test_selector_string_is_sorted() -> None:
    assert selector_string({"b": "2", "a": "1"}) == "a=1,b=2"


def test_offending_lines_find_gunicorns_control_socket_error() -> None:
    log = ("[2026-11-30 10:00:00 +0000] [1] [INFO] Starting gunicorn 23.0.0\n"
           "[2026-11-30 10:00:00 +0000] [1] [ERROR] Control server error: [Errno 30] Read-only file system: "
           "'/nonexistent'\n"
           "[2026-11-30 10:00:01 +0000] [7] [INFO] Booting worker with pid: 7\n")
    assert offending_lines(log) == ["[2026-11-30 10:00:00 +0000] [1] [ERROR] Control server error: [Errno 30] "
                                    "Read-only file system: '/nonexistent'"]
    assert offending_lines("OSError: [Errno 30] Read-only file system: '/app/x'") != []
    assert offending_lines("all fine\nread-only root filesystem is on\n") == []


def test_marked_json_ignores_log_lines_around_it() -> None:
    output = 'INFO something\nK8S_TESTS_SCHEDULE={"a": [1, true]}\nINFO after\n'
    assert marked_json(output, "K8S_TESTS_SCHEDULE=") == {"a": [1, True]}
    with pytest.raises(ValueError, match="no line starting with"):
        marked_json("nothing", "K8S_TESTS_SCHEDULE=")


def test_probe_pods_are_strangers_to_the_release_and_the_deny_policy_admits_nothing() -> None:
    from k8s_support.probes import PROBE_LABEL, deny_all_ingress, probe_pod
    from k8s_support.release import INSTANCE_LABEL

    pod = probe_pod("p", "img:1", "client-x", ["python", "-c", "pass"])
    assert pod["metadata"]["labels"] == {PROBE_LABEL: "client-x"} and INSTANCE_LABEL not in pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsNonRoot"]
    policy = deny_all_ingress("deny", "server-x")
    assert policy["spec"] == {"podSelector": {"matchLabels": {PROBE_LABEL: "server-x"}}, "policyTypes": ["Ingress"]}
