"""Sentinel mode (values-examples/sentinel.yaml): the Redis primary's pod is lost in the middle of a burst.

A replica is promoted and the stack follows it by itself: the API accepts tasks again, workers consume from the
new primary, beat keeps its lease and ticks, the queue exporter reads the new primary, KEDA wakes a pool from zero
on the new primary's backlog; no app pod restarts. Every task the API accepted is counted: sent, succeeded, lost
(must be 0: with `broker.publishWait.replicas: 1` a task is accepted only once a replica holds it), and run again
(a delivery repeated because an acknowledgement did not reach the new primary; the task records its action once).

Two ways to lose the primary: its pod force-deleted (grace 0, `kubectl delete --force`: gone from the API at once; the
kubelet still starts its preStop and kills the containers ~2 s later, so either the hook got to hand over or the
sentinels notice the loss after `downAfterMilliseconds`), and its pod deleted with its grace period as a drain or
a rollout would (preStop hands the primary over first).

Runs only against a release in Sentinel mode (`make cluster-test` installs one of its own); skipped otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from k8s_support import metrics
from k8s_support.api import TaskApi
from k8s_support.bursts import BurstInFlight
from k8s_support.keda import readiness_problem, scaled_objects
from k8s_support.portforward import PortForward
from k8s_support.release import ClusterReader, Release, service_port
from k8s_support.samples import drain_budget
from k8s_support.sentinel import (
    describe_group,
    primaries_seen,
    primary_pod,
    redis_pods,
    replication,
    sentinel_mode,
)
from k8s_support.waiting import WaitTimeout, wait_for
from k8s_support.wake import wake_from_zero, zero_pool
from tests.support.figures import report

pytestmark = pytest.mark.sentinel

#: The most tasks one burst submits; it is stopped once publishing has gone on for a while on the new primary.
BURST_LIMIT = 20_000
#: Tasks accepted before the primary is lost (the burst is under way), and after the promotion (publishing resumed).
BEFORE, AFTER = 500, 500
#: Seconds a submission is retried through the failover (the API answers 503 while no primary takes writes).
RETRY_FOR = 120
#: App components that must keep their pods (no restart, no replacement) through a failover; worker pools are
#: checked for container restarts only (KEDA may replace their pods while scaling).
FIXED = ("web", "beat", "exporter", "flower")


@pytest.fixture(scope="module", autouse=True)
def _sentinel_release(reader: ClusterReader) -> None:
    if not sentinel_mode(reader):
        pytest.skip("the release runs a single Redis: install it with -f values-examples/sentinel.yaml "
                    "(`make cluster-test` runs these tests in a Sentinel release of its own)")


def data_nodes(reader: ClusterReader) -> int:
    sets = reader.apps.list_namespaced_stateful_set(reader.release.namespace,
                                                    label_selector=reader.release.selector("redis")).items
    assert len(sets) == 1, f"expected one Redis StatefulSet, found {[s.metadata.name for s in sets]}"
    return int(sets[0].spec.replicas)


def healthy_group(reader: ClusterReader) -> str | None:
    """The primary's name once every pod runs, every sentinel names the same primary and every other node
    replicates it (link up); None before."""
    nodes = data_nodes(reader)
    pods = redis_pods(reader)
    if len(pods) != nodes or not all(all(c.ready for c in p.status.container_statuses or []) for p in pods):
        return None
    seen = primaries_seen(reader)
    if len(seen) != nodes or len(set(seen.values())) != 1:
        return None
    primary = next(iter(seen.values()))
    for pod in pods:
        info = replication(reader, pod)
        expected = "master" if pod.metadata.name == primary else "slave"
        if info.get("role") != expected or (expected == "slave" and info.get("master_link_status") != "up"):
            return None
        if expected == "master" and int(info.get("connected_slaves", 0)) != nodes - 1:
            return None
    return primary


def wait_healthy(reader: ClusterReader, dump: Callable[[], str], timeout: float = 300) -> str:
    return wait_for(lambda: healthy_group(reader), timeout=timeout, interval=2,
                    retry_on=(RuntimeError, TimeoutError), diagnostics=dump,
                    description="every Redis pod Ready, the sentinels agreeing on one primary, every replica's "
                                "link to it up")


def app_pods(reader: ClusterReader) -> dict[str, tuple[str, str, int]]:
    """{pod uid: (component, name, container restarts)} of every app pod (all but Redis and PostgreSQL)."""
    found = {}
    for pod in reader.pods(reader.release.selector(), running_only=False):
        component = (pod.metadata.labels or {}).get("app.kubernetes.io/component", "")
        if component in ("redis", "postgresql", "migrations") or pod.status.phase != "Running":
            continue
        restarts = sum(c.restart_count for c in pod.status.container_statuses or [])
        found[pod.metadata.uid] = (component, pod.metadata.name, restarts)
    return found


def restarted(before: dict[str, tuple[str, str, int]], after: dict[str, tuple[str, str, int]]) -> list[str]:
    problems = [f"{name}: {restarts} -> {after[uid][2]} container restarts"
                for uid, (_, name, restarts) in before.items() if uid in after and after[uid][2] != restarts]
    problems += [f"{name} ({component}) was replaced" for uid, (component, name, _) in before.items()
                 if component in FIXED and uid not in after]
    return problems


@pytest.fixture
def exporter_url(reader: ClusterReader, forward: Callable[[str, int], PortForward]) -> str:
    service = reader.service("exporter")
    return forward(f"svc/{service.metadata.name}", service_port(service, "metrics")).url


def exporter_follows(url: str, since: float) -> bool:
    """The exporter reads the broker, and the beat tick it serves is newer than ``since``: beat ticked on the new
    primary and the exporter read it there."""
    samples = metrics.parse(requests.get(f"{url}/metrics", timeout=10).text)
    return (metrics.total(samples, "celery_broker_up") == 1
            and metrics.total(samples, "celery_beat_last_tick_timestamp_seconds") > since)


def test_the_sentinels_name_one_primary_that_every_replica_follows(reader: ClusterReader,
                                                                   dump: Callable[[], str]) -> None:
    primary = wait_healthy(reader, dump)
    environment = reader.environment("web", "web")
    assert environment["REDIS_URL"].startswith("sentinel://"), "the app is not given the sentinels' addresses"
    print(f"primary: {primary}")


@pytest.fixture
def burst_cleanup() -> Iterator[list[BurstInFlight]]:
    bursts: list[BurstInFlight] = []
    yield bursts
    for burst in bursts:
        burst.stop()


@pytest.mark.disruptive
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("grace", [0, None], ids=["force-deleted", "deleted"])
def test_losing_the_primary_mid_burst_loses_no_task(
    grace: int | None, task_api: TaskApi, reader: ClusterReader, release: Release, core: Any, custom: Any,
    exporter_url: str, burst_cleanup: list[BurstInFlight], dump: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = wait_healthy(reader, dump)
    before = app_pods(reader)
    burst = BurstInFlight(task_api, BURST_LIMIT, retry_for=RETRY_FOR)
    burst_cleanup.append(burst)
    burst.first(BEFORE)

    lost_at = time.time()
    how = "force-deleted (grace 0)" if grace == 0 else "deleted (default grace: preStop hands over)"
    core.delete_namespaced_pod(old, release.namespace, grace_period_seconds=grace)
    watcher = ThreadPoolExecutor(1)
    beat_back = watcher.submit(
        wait_for, lambda: exporter_follows(exporter_url, lost_at) and time.time() - lost_at, timeout=180,
        interval=1, retry_on=(requests.RequestException,),
        description="the exporter to read a beat tick newer than the failover from the broker")
    watcher.shutdown(wait=False)

    def promoted() -> str | None:
        pod = primary_pod(reader)
        return pod.metadata.name if pod.metadata.name != old else None

    new = wait_for(promoted, timeout=120, interval=0.5, retry_on=(RuntimeError, TimeoutError, AssertionError),
                   diagnostics=dump, description=f"the sentinels to name a primary other than {old}")
    promoted_after = time.time() - lost_at
    wait_for(lambda: burst.accepted_since(lost_at + promoted_after) >= AFTER, timeout=180, interval=0.5,
             diagnostics=lambda: f"{burst.describe()}\n{describe_group(reader)}\n{dump()}",
             description=f"{AFTER} tasks accepted by the API after {new} was promoted")
    ids = burst.ids_after(f"losing primary {old}", task_api, timeout=60, stop=True)
    gaps = [b - a for a, b in zip(burst.accepted_at, burst.accepted_at[1:], strict=False) if b > lost_at - 1]
    beat_after = beat_back.result(timeout=200)

    lost: list[str] = []
    waited = ""  # the wait's report (states seen, where each app pod is connected, pods and logs) when tasks are lost
    try:
        done = task_api.wait_all_success(ids, timeout=drain_budget(len(ids)),
                                         diagnostics=lambda: f"{describe_group(reader)}\n{dump()}")
    except WaitTimeout as exc:
        waited = str(exc)
        done = {task_id: body for task_id in ids if (body := task_api.status(task_id))["state"] == "SUCCESS"}
        lost = [task_id for task_id in ids if task_id not in done]
    again = sum(1 for body in done.values() if isinstance(body["result"], dict) and body["result"]["created"] is False)
    report(capsys, "failover", f"primary {old} {how}", [
        ("sent / succeeded / lost / run again", f"{len(ids)} / {len(done)} / {len(lost)} / {again}"),
        ("promoted", f"{new} after {promoted_after:.1f} s"),
        ("API: longest pause between accepted tasks",
         f"{max(gaps, default=0):.1f} s ({burst.refused} 503s, {burst.unanswered} unanswered, sent again)"),
        ("exporter: beat tick from the new primary after", f"{beat_after:.1f} s"),
    ])
    assert not lost, f"{len(lost)} of {len(ids)} accepted tasks never ran, e.g. {lost[:5]}\n{waited}"

    # The lost pod comes back (the StatefulSet recreates it) as a replica of the new primary.
    assert wait_healthy(reader, dump) == new
    # KEDA reads the new primary: a pool at zero wakes on a task queued there.
    wake_from_zero(task_api, reader, custom, zero_pool(reader, custom), dump)
    problems = [p for item in scaled_objects(custom, release) if (p := readiness_problem(item))]
    assert not problems, problems
    # No app pod needed a restart to follow the new primary.
    assert not restarted(before, app_pods(reader)), restarted(before, app_pods(reader))
