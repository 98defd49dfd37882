"""Parsing a real exposition: the worker's kind of counters and histograms from prometheus_client."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from k8s_support import metrics


def exposition() -> str:
    registry = CollectorRegistry()
    succeeded = Counter("celery_task_succeeded", "Tasks that succeeded", ["name", "queue_name", "hostname"],
                        registry=registry)
    succeeded.labels("apps.main.tasks.health_check", "default", "default@a").inc(2)
    succeeded.labels("apps.main.tasks.health_check", "default", "default@b").inc(1)
    succeeded.labels("apps.main.tasks.backup_data", "low_priority", "low-priority@c").inc(5)
    runtime = Histogram("celery_task_runtime", "Runtime", ["name", "queue_name"], registry=registry)
    runtime.labels("apps.main.tasks.backup_data", "low_priority").observe(0.3)
    return generate_latest(registry).decode()


def test_total_sums_matching_samples_across_hosts() -> None:
    samples = metrics.parse(exposition())
    assert metrics.total(samples, "celery_task_succeeded_total", name="apps.main.tasks.health_check") == 3
    assert metrics.total(samples, "celery_task_succeeded_total", hostname="low-priority@c") == 5
    assert metrics.total(samples, "celery_task_succeeded_total") == 8
    assert metrics.total(samples, "celery_task_failed_total") == 0


def test_histogram_samples_are_addressable() -> None:
    samples = metrics.parse(exposition())
    (count,) = metrics.matching(samples, "celery_task_runtime_count", name="apps.main.tasks.backup_data")
    assert count.value == 1 and count.labels["queue_name"] == "low_priority"


def test_a_broken_exposition_raises() -> None:
    with pytest.raises(ValueError):
        metrics.parse("celery_task_succeeded_total{name=\"x\" 1\n")
