"""The worker counters resolve their labelled series once per (task, queue), and stay correct doing so."""

from __future__ import annotations

from types import SimpleNamespace

from apps.main.metrics import worker
from apps.main.queues import task_name


def test_series_are_reused_per_task_and_queue_and_kept_apart_across_them(monkeypatch) -> None:
    monkeypatch.setattr(worker, "_series", {})
    name = task_name("process_user_action")
    high = SimpleNamespace(delivery_info={"routing_key": "high_priority"})
    low = SimpleNamespace(delivery_info={"routing_key": "low_priority"})
    first = worker._series_of(worker.TASK_STARTED, name, high)
    assert worker._series_of(worker.TASK_STARTED, name, high) is first
    assert worker._series_of(worker.TASK_STARTED, name, low) is not first
    assert first is worker.TASK_STARTED.labels(name, "high_priority", worker.labels.hostname())
    assert worker._series_of(worker.TASK_RUNTIME, name, high) is worker.TASK_RUNTIME.labels(name, "high_priority")
    # Labels stay bounded whatever the message says: an unknown task and queue share one series.
    odd = worker._series_of(worker.TASK_STARTED, "x.y", SimpleNamespace(delivery_info={"routing_key": "zz"}))
    assert odd is worker.TASK_STARTED.labels("unregistered", "other", worker.labels.hostname())


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(worker, "_series", {})
    for i in range(worker._SERIES_LIMIT + 5):
        worker._series_of(worker.TASK_RECEIVED, "x", SimpleNamespace(delivery_info={"routing_key": f"q{i}"}))
    assert len(worker._series) <= worker._SERIES_LIMIT
