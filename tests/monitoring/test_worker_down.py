"""celery_worker_up 0 from the exporter: a worker killed without a clean stop is reported, a stopped one is not.

The celery-mixin's CeleryWorkerDown alert is ``celery_worker_up == 0``; a worker's own endpoint only ever says 1
(and vanishes with it), so the exporter reports what its census lost (apps.main.metrics.exporter.WorkerLiveness).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

import apps.main.metrics  # noqa: F401 — the worker_shutting_down receiver is what the SIGTERM case proves
from apps.main.metrics.exporter import BrokerLayout, QueueExporter, WorkerLiveness, broker_client
from apps.main.queues import HIGH_PRIORITY, QUEUES, WorkerPool
from apps.main.redis_keys import WORKER_STOPPED_KEY
from embedded.network import wait_until
from embedded.supervisor import Supervisor
from tests.monitoring.conftest import exposed_families, start_worker_as
from tests.support.timeouts import scaled

# --- the bookkeeping, on a clock of its own -----------------------------------------------------------------


def _never_stopped(nodes: list[str]) -> set[str]:
    return set()


def test_lost_worker_is_down_after_the_grace_and_forgotten_after_the_retention() -> None:
    liveness = WorkerLiveness(down_after=60, retention=3600)
    liveness.update({"a@pod-a", "b@pod-b"}, 0, _never_stopped)
    assert liveness.update({"a@pod-a"}, 60, _never_stopped) == frozenset(), "down only after down_after"
    assert liveness.update({"a@pod-a"}, 61, _never_stopped) == {"pod-b"}
    assert liveness.update({"a@pod-a"}, 3600, _never_stopped) == {"pod-b"}, "kept for the retention"
    assert liveness.update({"a@pod-a"}, 3601, _never_stopped) == frozenset()
    assert "b@pod-b" not in liveness.last_seen, "forgotten: memory and series are bounded"


def test_answering_again_clears_and_a_clean_stop_is_never_down() -> None:
    liveness = WorkerLiveness(down_after=10, retention=100)
    liveness.update({"a@pod-a", "b@pod-b"}, 0, _never_stopped)
    assert liveness.update(set(), 11, _never_stopped) == {"pod-a", "pod-b"}
    assert liveness.update({"a@pod-a"}, 12, _never_stopped) == {"pod-b"}, "pod-a answered again"
    asked: list[list[str]] = []

    def b_stopped(nodes: list[str]) -> set[str]:
        asked.append(nodes)
        return {"b@pod-b"} & set(nodes)

    assert liveness.update({"a@pod-a"}, 13, b_stopped) == frozenset()
    assert asked == [["b@pod-b"]] and "b@pod-b" not in liveness.last_seen


def test_a_host_label_with_a_live_node_is_not_reported() -> None:
    # Two workers on one host share the hostname label: the live one's own series says 1 for it.
    liveness = WorkerLiveness(down_after=10, retention=100)
    liveness.update({"high@node1", "low@node1"}, 0, _never_stopped)
    assert liveness.update({"high@node1"}, 11, _never_stopped) == frozenset()
    assert "low@node1" in liveness.last_seen


# --- real workers, a real census, real signals ----------------------------------------------------------------


@pytest.fixture
def exporter_and_workers(valkey, live_env: dict[str, str], process_logs: Path) -> Iterator[dict]:
    client = redis.Redis.from_url(valkey.url)
    client.flushdb()
    app = Celery("worker-down-test", broker=valkey.url, set_as_current=False)
    supervisor = Supervisor(log_dir=process_logs / f"worker-down-{uuid.uuid4().hex[:6]}",
                            env={**live_env, "REDIS_URL": valkey.url})
    exporter = QueueExporter(client=broker_client(valkey.url, 1.0), layout=BrokerLayout(queues=QUEUES), app=app,
                             interval=0.5, inspect_interval=0.5, inspect_timeout=0.5, database=None,
                             worker_down_after=2.0, worker_down_retention=600.0)
    try:
        yield {"app": app, "redis": client, "supervisor": supervisor, "exporter": exporter}
    finally:
        exporter.stop()
        supervisor.stop_all()
        app.close()


def _down_hosts(exporter: QueueExporter) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    family = exposed_families(generate_latest(registry).decode()).get("celery_worker_up")
    return {s.labels["hostname"]: s.value for s in family["samples"]} if family else {}


@pytest.mark.live
@pytest.mark.timeout(180)
def test_sigkill_is_reported_down_sigterm_is_not_and_a_return_clears(exporter_and_workers: dict) -> None:
    app, supervisor = exporter_and_workers["app"], exporter_and_workers["supervisor"]
    exporter: QueueExporter = exporter_and_workers["exporter"]
    pool = WorkerPool((HIGH_PRIORITY,), concurrency=1)
    stopped_node, killed_node = "pool@pod-stopped", "pool@pod-killed"  # host parts: what pod names give
    stopped = start_worker_as(supervisor, stopped_node, pool, app)
    killed = start_worker_as(supervisor, killed_node, pool, app)
    exporter.start()
    wait_until(lambda: {stopped_node, killed_node} <= set(exporter.liveness.last_seen), timeout=scaled(20),
               what="the exporter's census to see both workers")

    # A scale-down or rollout: SIGTERM, a warm shutdown. The worker says so before it stops answering.
    supervisor.stop(stopped)
    assert exporter_and_workers["redis"].exists(WORKER_STOPPED_KEY.format(node=stopped_node))
    # A crash, an OOM kill, a lost node: SIGKILL to the whole worker (main process and pool), no word said.
    os.killpg(killed.process.pid, signal.SIGKILL)
    killed.process.wait(10)
    supervisor.children.remove(killed)

    seen: list[dict[str, float]] = []

    def down_hosts_are(expected: dict[str, float]) -> bool:
        seen.append(_down_hosts(exporter))
        return seen[-1] == expected

    try:
        wait_until(lambda: down_hosts_are({"pod-killed": 0.0}), timeout=scaled(20),
                   what='celery_worker_up{hostname="pod-killed"} 0 and nothing else')
    except TimeoutError as error:
        raise AssertionError(f"{error}; the exporter serves {seen[-1:]}") from None
    # The stopped worker went silent first, so it would be reported by now: it is forgotten instead.
    assert stopped_node not in exporter.liveness.last_seen
    assert "pod-stopped" not in _down_hosts(exporter)

    # The same pod's container restarts (the kubelet after an OOM kill): it answers again, the 0 goes away.
    start_worker_as(supervisor, killed_node, pool, app)
    wait_until(lambda: down_hosts_are({}), timeout=scaled(20), what="the 0 to clear once pod-killed answers again")
