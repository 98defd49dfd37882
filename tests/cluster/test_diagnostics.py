"""describe_pods through the real kubernetes client against a local API server stand-in."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from k8s_support.diagnostics import describe_pods, write_dump
from tests.cluster.kubefake import fake_api

PODS = {
    "kind": "PodList", "apiVersion": "v1", "metadata": {},
    "items": [
        {
            "metadata": {"name": "rel-worker-default-1", "namespace": "ns"},
            "spec": {"nodeName": "kind-worker", "containers": [{"name": "worker", "image": "celery-stack:dev"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                "message": "containers with unready status: [worker]"}],
                "initContainerStatuses": [{
                    "name": "wait-for-migrations", "ready": True, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }],
                "containerStatuses": [{
                    "name": "worker", "ready": False, "restartCount": 3, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }],
            },
        },
    ],
}
EVENTS = {
    "kind": "EventList", "apiVersion": "v1", "metadata": {},
    "items": [
        {"metadata": {"name": f"e{i}", "namespace": "ns"}, "type": "Warning", "reason": "BackOff",
         "message": f"Back-off restarting failed container {i}", "lastTimestamp": f"2026-01-01T00:00:0{i}Z",
         "involvedObject": {"kind": "Pod", "name": "rel-worker-default-1"}}
        for i in range(5)
    ],
}


def test_dump_shows_states_logs_previous_logs_and_events() -> None:
    logs = {
        "rel-worker-default-1/wait-for-migrations": "migrations applied\n",
        "rel-worker-default-1/worker": "",
        "rel-worker-default-1/worker/previous": "Traceback (most recent call last):\nKeyError: 'REDIS_URL'\n",
    }
    with fake_api({"/api/v1/namespaces/ns/pods": PODS, "/api/v1/namespaces/ns/events": EVENTS}, logs) as api:
        text = describe_pods(client.CoreV1Api(api), "ns", "app.kubernetes.io/instance=rel", events=3)
    assert "== pods in namespace ns matching app.kubernetes.io/instance=rel: 1" in text
    assert "-- pod rel-worker-default-1: phase=Running node=kind-worker" in text
    assert "condition Ready=False (ContainersNotReady: containers with unready status: [worker])" in text
    assert "init wait-for-migrations: ready=True restarts=0 terminated (Completed, exit 0)" in text
    assert "      | migrations applied" in text
    assert ("container worker: ready=False restarts=3 waiting (CrashLoopBackOff: back-off 40s); "
            "last: Error, exit 1") in text
    assert "(empty log)" in text
    assert "previous run of worker:\n      | Traceback (most recent call last):\n      | KeyError: 'REDIS_URL'" in text
    assert "== last 3 of 5 events in ns" in text
    assert "Back-off restarting failed container 4" in text and "container 1" not in text


def test_api_errors_end_up_in_the_text() -> None:
    with fake_api({}) as api:
        text = describe_pods(client.CoreV1Api(api), "gone", "")
    assert text.startswith("== cannot list pods in gone (all): (404)")


def test_write_dump_names_the_file_after_the_test(tmp_path: Path) -> None:
    path = write_dump(tmp_path / "artifacts", "k8s-tests/test_tasks.py::test_task[send_notification]", "dump")
    assert path.parent == tmp_path / "artifacts"
    assert path.name == "k8s-tests_test_tasks.py__test_task_send_notification_.txt"
    assert path.read_text() == "dump\n"
