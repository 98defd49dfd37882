"""Benchmark: how fast KEDA reacts to a burst, and what autoscaling buys, on a live release.

    PYTHONPATH=k8s-tests:app uv run python k8s-tests/bench_autoscaling.py [--tasks 2000]   (`make cluster-bench`)

Two bursts of real tasks (k8s_support.samples.BURST_TASK) on the pool that serves them:
1. autoscaled: the pool rests at its minimum; printed are the seconds from the first task published to
   the first extra replica requested by KEDA, to the first extra worker pod Ready, to the last task done.
2. one fixed replica: the pool pinned to 1 (KEDA's paused-replicas annotation), the same burst drained.
The figures go to stdout (docs/cluster.md quotes them); nothing is asserted: this is not a test.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "k8s-tests", ROOT / "app"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from apps.main.queues import queue_for  # noqa: E402
from k8s_support.api import TaskApi  # noqa: E402
from k8s_support.cluster import probe  # noqa: E402
from k8s_support.keda import one_scaled_object, patch_scaled_object, paused_replicas_patch  # noqa: E402
from k8s_support.portforward import PortForward  # noqa: E402
from k8s_support.release import POOL_LABEL, ClusterReader, Release, service_port  # noqa: E402
from k8s_support.samples import BURST_TASK, burst_arguments, drain_budget  # noqa: E402
from k8s_support.waiting import wait_for  # noqa: E402
from k8s_support.workloads import pool_for_queue, pool_queues  # noqa: E402


class Watcher(threading.Thread):
    """Samples the pool's Deployment every half second: when replicas were first raised, and first Ready."""

    def __init__(self, reader: ClusterReader, pool: str, baseline: int, began: float) -> None:
        super().__init__(daemon=True)
        self.reader, self.pool, self.baseline, self.began = reader, pool, baseline, began
        self.requested: float | None = None
        self.ready: float | None = None
        self.peak = baseline
        self.stop = threading.Event()

    def _deployment(self) -> Any:
        return next(d for d in self.reader.deployments("worker") if d.metadata.labels[POOL_LABEL] == self.pool)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            deployment = self._deployment()
            now = time.monotonic() - self.began
            wanted = deployment.spec.replicas or 0
            ready = deployment.status.ready_replicas or 0
            self.peak = max(self.peak, wanted)
            if self.requested is None and wanted > self.baseline:
                self.requested = now
            if self.ready is None and ready > self.baseline:
                self.ready = now


def burst(api: TaskApi, reader: ClusterReader, pool: str, baseline: int, size: int) -> dict[str, float | None]:
    began = time.monotonic()
    watcher = Watcher(reader, pool, baseline, began)
    watcher.start()
    ids = api.submit_many(BURST_TASK, burst_arguments, size)
    published = time.monotonic() - began
    api.wait_all_success(ids, timeout=drain_budget(size))
    drained = time.monotonic() - began
    watcher.stop.set()
    watcher.join()
    return {"published": published, "replica requested": watcher.requested, "extra pod Ready": watcher.ready,
            "drained": drained, "peak replicas": float(watcher.peak)}


def settle(reader: ClusterReader, pool: str, replicas: int, timeout: float) -> None:
    def at_rest() -> bool:
        deployment = next(d for d in reader.deployments("worker") if d.metadata.labels[POOL_LABEL] == pool)
        return (deployment.spec.replicas or 0) == replicas and (deployment.status.ready_replicas or 0) == replicas

    wait_for(at_rest, timeout=timeout, interval=2, description=f"pool {pool} to rest at {replicas} replica(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per burst (default 2000)")
    args = parser.parse_args()

    release = Release.from_env()
    found = probe(release.context)
    if not found.reachable:
        print(f"no cluster: {found.reason}", file=sys.stderr)
        return 2
    from kubernetes import client

    core, apps, custom = (client.CoreV1Api(found.client), client.AppsV1Api(found.client),
                          client.CustomObjectsApi(found.client))
    reader = ClusterReader(core, apps, release)
    pool = pool_for_queue(pool_queues(reader.deployments("worker")), queue_for(BURST_TASK))
    scaled = one_scaled_object(custom, release, pool)
    minimum = int(scaled["spec"].get("minReplicaCount", 0))
    service = reader.service("web")
    token = reader.environment("web", "web")["API_TOKEN"]
    rows: dict[str, dict[str, float | None]] = {}
    with PortForward(f"svc/{service.metadata.name}", service_port(service, "http"), namespace=release.namespace,
                     context=release.context) as forward:
        api = TaskApi(forward.url, token)
        print(f"pool {pool}: minReplicas {minimum}, maxReplicas {scaled['spec'].get('maxReplicaCount')}, "
              f"{args.tasks} {BURST_TASK} tasks per burst", flush=True)
        settle(reader, pool, minimum, timeout=600)
        rows["autoscaled (KEDA)"] = burst(api, reader, pool, minimum, args.tasks)
        name = scaled["metadata"]["name"]
        patch_scaled_object(custom, release, name, paused_replicas_patch(1))
        try:
            settle(reader, pool, 1, timeout=600)
            rows["one fixed replica"] = burst(api, reader, pool, 1, args.tasks)
        finally:
            patch_scaled_object(custom, release, name, paused_replicas_patch(None))

    columns = ["published", "replica requested", "extra pod Ready", "drained", "peak replicas"]
    print(f"\n{'':20}" + "".join(f"{c:>19}" for c in columns))
    for label, row in rows.items():
        cells = ["-" if row[c] is None else f"{row[c]:.0f}" + ("" if c == "peak replicas" else " s") for c in columns]
        print(f"{label:20}" + "".join(f"{cell:>19}" for cell in cells))
    print("(seconds from the first task published)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
