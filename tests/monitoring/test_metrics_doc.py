"""docs/metrics.md is the catalogue: the code defines exactly its metrics, and the dashboard reads only them."""

from __future__ import annotations

import json
import re

from prometheus_client.metrics import MetricWrapperBase

from apps.main.metrics import web, worker
from tests.monitoring.conftest import DASHBOARD_FILE, documented_metrics, kube_state_metrics

_SUFFIX = {"counter": "_total", "histogram": "", "gauge": ""}


def _defined(module) -> dict[str, dict]:
    out = {}
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase):
            out[value._name + _SUFFIX[value._type]] = {"type": value._type, "labels": frozenset(value._labelnames)}
    return out


def test_worker_and_web_metrics_are_the_documented_ones() -> None:
    documented = documented_metrics()
    defined = {**_defined(worker), **_defined(web)}
    # The two gauges the worker's main process computes at scrape time (WorkerStateCollector).
    for family in worker.WorkerStateCollector().collect():
        defined[family.name] = {"type": family.type, "labels": frozenset(family.samples[0].labels)}
    expected = {n: d for n, d in documented.items() if d["endpoints"] & {"worker", "web"}}
    assert set(defined) == set(expected), (
        f"undocumented: {sorted(set(defined) - set(expected))}; not defined: {sorted(set(expected) - set(defined))}"
    )
    for name, info in defined.items():
        assert info["type"] == expected[name]["type"], name
        assert info["labels"] == expected[name]["labels"], f"{name}: {sorted(info['labels'])}"


def test_celery_exporter_compatible_names_and_labels() -> None:
    """Dashboards and the alert mixin of danihodovic/celery-exporter rely on these exact label sets."""
    documented = documented_metrics()
    task = frozenset({"name", "queue_name", "hostname"})
    for event in ("sent", "received", "started", "succeeded", "retried", "rejected", "revoked"):
        assert documented[f"celery_task_{event}_total"]["labels"] == task
    assert documented["celery_task_failed_total"]["labels"] == task | {"exception"}
    assert documented["celery_queue_length"]["labels"] == {"queue_name"}
    assert documented["celery_worker_up"]["labels"] == documented["celery_worker_tasks_active"]["labels"] == {
        "hostname"}


def test_no_label_can_carry_unbounded_values() -> None:
    forbidden = {"id", "task_id", "uuid", "args", "kwargs", "path", "url", "user", "message", "pid"}
    for name, info in documented_metrics().items():
        assert not info["labels"] & forbidden, f"{name} has an unbounded label: {info['labels'] & forbidden}"


# --- the dashboard -------------------------------------------------------------------------------------

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                 "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression (strings, label matchers, ranges and groupings removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        following = expr[match.end():].lstrip()[:1]
        if following == "(" or word.lower() in _PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(word)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"].replace("label_values(", "").split(",")[0])
    return queries


def test_dashboard_loads_and_covers_the_issue() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == "celery-stack" and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    # Throughput, failures, queue lengths, in-flight, runtimes and replicas per pool.
    for needed in ("celery_task_succeeded_total", "celery_task_failed_total", "celery_queue_length",
                   "celery_queue_in_flight", "celery_task_runtime_bucket", "kube_deployment_status_replicas"):
        assert needed in used, f"the dashboard shows no {needed}"


def test_dashboard_queries_name_only_documented_metrics() -> None:
    documented = documented_metrics()
    known = set(kube_state_metrics())
    for name, info in documented.items():
        known.add(name)
        if info["type"] == "histogram":
            known |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    for query in dashboard_queries():
        unknown = metric_names(query) - known
        assert not unknown, f"dashboard query names undocumented metrics {unknown}: {query}"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, name) (rate(celery_task_runtime_bucket{namespace="a"}[5m])))'
            ' / on (name) group_left max(kube_deployment_status_replicas) or vector(0)')
    assert metric_names(expr) == {"celery_task_runtime_bucket", "kube_deployment_status_replicas"}
