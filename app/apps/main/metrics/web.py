"""Web metrics: requests per view (route name, method, status class) and tasks enqueued by the API.

gunicorn runs several worker processes; with ``$PROMETHEUS_MULTIPROC_DIR`` set they share their
samples through multiprocess files and ``/metrics`` answers for the whole pod. Without it (runserver)
the default registry of the one process is served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from apps.main.api.signals import task_enqueued
from apps.main.metrics import labels
from apps.main.metrics import multiprocess as mp

#: Route name of a request that matched no URL pattern (404s): one value, not the path.
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter(
    "celery_stack_http_requests", "HTTP requests answered, per view.", ("view", "method", "status")
)
HTTP_REQUEST_DURATION = Histogram(
    "celery_stack_http_request_duration_seconds", "Seconds from request to response, per view.",
    ("view", "method"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)
API_TASKS_ENQUEUED = Counter(
    "celery_stack_api_tasks_enqueued", "Tasks the HTTP API enqueued.", ("name", "queue_name")
)


def count_enqueue(task_name: str, queue: str) -> None:
    """Count one task enqueued through the API (the API's ``task_enqueued`` signal calls this)."""
    API_TASKS_ENQUEUED.labels(labels.task_label(task_name), labels.queue_label(queue)).inc()


def _on_task_enqueued(task_name: str = "", queue: str = "", **_: Any) -> None:
    count_enqueue(task_name, queue)


task_enqueued.connect(_on_task_enqueued, dispatch_uid="apps.main.metrics.api_enqueued")


def _view_name(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return match.view_name or match.url_name or UNMATCHED


class RequestMetricsMiddleware:
    """First in MIDDLEWARE: times everything below it, including the other middleware."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        begun = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - begun
        view, method = _view_name(request), labels.method_label(request.method)
        HTTP_REQUESTS.labels(view, method, labels.status_class(response.status_code)).inc()
        HTTP_REQUEST_DURATION.labels(view, method).observe(elapsed)
        return response


_registry: Any = None


def metrics_view(request: Any) -> Any:
    """GET /metrics on the web port."""
    from django.http import HttpResponse

    global _registry
    if _registry is None:
        _registry = mp.serving_registry()
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
