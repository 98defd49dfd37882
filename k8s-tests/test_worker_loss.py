"""A worker lost mid-burst loses no task: acks_late + reject_on_worker_lost, warm shutdown on SIGTERM.

The work is a burst of real, fast tasks (k8s_support.samples.BURST_TASK); while its backlog is being
worked off, one pod of its pool is deleted, or its pool processes are SIGKILLed, and every task of the
burst must still end in SUCCESS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from k8s_support.api import TaskApi, host_of_worker, pool_of_worker
from k8s_support.bursts import BurstInFlight, burst_pool
from k8s_support.processes import kill_pool_children_script
from k8s_support.release import ClusterReader
from k8s_support.samples import BURST_TASK, drain_budget
from k8s_support.waiting import wait_for

#: Runs in the worker container: SIGKILL every prefork child of the Celery main process (not of tini,
#: PID 1), as the kernel's OOM killer would. The main process then sees WorkerLostError and requeues the task.
KILL_POOL_CHILDREN = kill_pool_children_script()

#: Burst tasks looked at to find a pod working on the burst: the first submitted run first.
HEAD = 20


def pod_working_on(task_api: TaskApi, ids: list[str], pool: str, dump: Callable[[], str]) -> str:
    """A pod of ``pool`` that picked up the burst: one running a task of it, else one that ran one."""

    def find() -> str | None:
        seen = [status for status in map(task_api.status, ids[:HEAD])
                if status["state"] in ("STARTED", "SUCCESS") and status["worker"]]
        if not seen:
            return None
        status = next((s for s in seen if s["state"] == "STARTED"), seen[0])
        assert pool_of_worker(status["worker"]) == pool, f"{BURST_TASK} ran outside pool {pool}: {status}"
        return host_of_worker(status["worker"])

    return wait_for(find, timeout=180, interval=0.5, diagnostics=dump,
                    retry_on=(requests.ConnectionError, requests.Timeout),
                    description=f"one of the first {HEAD} burst tasks to be STARTED or done on a pod of {pool}")


@pytest.mark.disruptive
@pytest.mark.timeout(900)
def test_deleting_a_busy_worker_pod_loses_no_task(
    task_api: TaskApi, reader: ClusterReader, core: Any, dump: Callable[[], str]
) -> None:
    namespace = reader.release.namespace
    burst = BurstInFlight(task_api)
    pod = pod_working_on(task_api, burst.first(HEAD), burst_pool(reader), dump)
    grace = core.read_namespaced_pod(pod, namespace).spec.termination_grace_period_seconds or 30

    core.delete_namespaced_pod(pod, namespace)  # default grace: SIGTERM, warm shutdown
    ids = burst.ids_after(f"deleting pod {pod}", task_api, timeout=drain_budget(burst.size))

    done = task_api.wait_all_success(ids, timeout=drain_budget(len(ids)), diagnostics=dump)
    assert all(body["result"] for body in done.values()), [b for b in done.values() if not b["result"]][:5]

    def gone() -> bool:
        try:
            core.read_namespaced_pod(pod, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # The deletion really took the pod away (no finalizer or stuck shutdown kept it serving the burst).
    wait_for(gone, timeout=grace + 60, interval=2, description=f"deleted pod {pod} to be gone", diagnostics=dump)


@pytest.mark.disruptive
@pytest.mark.timeout(900)
def test_killed_pool_processes_requeue_their_tasks(
    task_api: TaskApi, reader: ClusterReader, core: Any, dump: Callable[[], str]
) -> None:
    burst = BurstInFlight(task_api)
    pod = pod_working_on(task_api, burst.first(HEAD), burst_pool(reader), dump)

    output = stream(
        core.connect_get_namespaced_pod_exec, pod, reader.release.namespace, container="worker",
        command=["python", "-c", KILL_POOL_CHILDREN], stderr=True, stdin=False, stdout=True, tty=False,
    )
    assert "killed=[" in output and "killed=[]" not in output, f"nothing killed in {pod}: {output}"
    assert re.search(r"main=\[\d+\] ", output), f"not exactly one Celery main process in {pod}: {output}"
    ids = burst.ids_after(f"SIGKILLing the pool processes of {pod}", task_api, timeout=drain_budget(burst.size))

    done = task_api.wait_all_success(ids, timeout=drain_budget(len(ids)), diagnostics=dump)
    assert all(body["result"] for body in done.values()), [b for b in done.values() if not b["result"]][:5]
