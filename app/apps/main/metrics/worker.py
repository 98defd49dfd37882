"""Task and worker metrics, fed by Celery's signals, served by the worker's main process.

Names and labels follow danihodovic/celery-exporter (``celery_task_*_total{name,queue_name,hostname}``,
``celery_task_runtime``, ``celery_worker_up``, ``celery_worker_tasks_active``) so its dashboards and
alert mixin work unchanged; the difference is that the worker counts for itself instead of an
exporter replaying the event stream (no events consumer to lag or miss a burst).

Which process counts what (prefork pool): publishes count where they happen (web, beat, workers);
``received``, ``rejected`` and ``revoked`` in the worker's main process; ``started``, ``succeeded``,
``failed``, ``retried``, the runtime and dead letters in the pool child that ran the task. Children
write through prometheus_client's multiprocess files; the main process serves the merged result on
``$METRICS_PORT``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals
from django.dispatch import receiver
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.main.metrics import labels
from apps.main.metrics import multiprocess as mp
from apps.main.task_timing import task_timed
from portfolio_site import environment as env
from portfolio_site.ports import WORKER_METRICS_PORT

logger = logging.getLogger(__name__)

#: Header ``before_task_publish`` adds to every task message: Unix time of the publish. The queue
#: exporter turns the oldest waiting message's value into ``celery_queue_oldest_task_age_seconds``.
PUBLISHED_AT_HEADER = "published_at"

TASK_LABELS = ("name", "queue_name", "hostname")

#: Up to the 60 s soft limit in fine steps, then the 120 s hard limit.
RUNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, float("inf"))

TASK_SENT = Counter("celery_task_sent", "Task messages published (counted by the publisher).", TASK_LABELS)
TASK_RECEIVED = Counter("celery_task_received", "Task messages a worker received.", TASK_LABELS)
TASK_STARTED = Counter("celery_task_started", "Task executions started.", TASK_LABELS)
TASK_SUCCEEDED = Counter("celery_task_succeeded", "Task executions that succeeded.", TASK_LABELS)
TASK_FAILED = Counter(
    "celery_task_failed", "Task executions that failed (the final attempt).", (*TASK_LABELS, "exception")
)
TASK_RETRIED = Counter("celery_task_retried", "Task executions that failed and were retried.", TASK_LABELS)
TASK_REJECTED = Counter(
    "celery_task_rejected", "Task messages a worker rejected (unknown task, undecodable).", TASK_LABELS
)
TASK_REVOKED = Counter("celery_task_revoked", "Tasks revoked (cancelled, expired, terminated).", TASK_LABELS)
TASK_DEAD_LETTERED = Counter(
    "celery_task_dead_lettered", "Tasks stored in the dead-letter store (failed for good).", TASK_LABELS
)
TASK_RUNTIME = Histogram(
    "celery_task_runtime", "Seconds a task execution took, whatever its outcome.", ("name", "queue_name"),
    buckets=RUNTIME_BUCKETS,
)
PERIODIC_LAST_SUCCESS = Gauge(
    "celery_periodic_task_last_success_timestamp_seconds",
    "Unix time a periodic task (beat header periodic_task_name) last succeeded.",
    ("name",),
    multiprocess_mode="max",  # the newest success over every child, dead ones included
)

def _queue_of(request: Any) -> str:
    delivery = getattr(request, "delivery_info", None) or {}
    return labels.queue_label(delivery.get("routing_key"))


def _task_labels(name: Any, request: Any) -> dict[str, str]:
    return {"name": labels.task_label(name), "queue_name": _queue_of(request), "hostname": labels.hostname()}


#: (task name, routing key, hostname) -> the labelled series every task touches: resolving the labels
#: and the series once per kind of task, not per task, is most of what the counters cost (on the hot
#: path of the worker's main process and of its pool processes). Names and queues are bounded, and so
#: is this (emptied past _SERIES_LIMIT, for a stream of hand-made routing keys).
_series: dict[tuple[Any, Any, str], dict[Counter | Histogram, Any]] = {}
_SERIES_LIMIT = 1000


def _series_of(metric: Counter | Histogram, name: Any, request: Any) -> Any:
    delivery = getattr(request, "delivery_info", None) or {}
    key = (name, delivery.get("routing_key"), labels.hostname())
    bound = _series.get(key)
    if bound is None:
        if len(_series) >= _SERIES_LIMIT:
            _series.clear()
        bound = _series[key] = {}
    series = bound.get(metric)
    if series is None:
        found = _task_labels(name, request)
        series = bound[metric] = (metric.labels(**found) if metric is not TASK_RUNTIME
                                  else metric.labels(found["name"], found["queue_name"]))
    return series


# --- publishing (every process that sends tasks) ---------------------------------------------------


@signals.before_task_publish.connect(dispatch_uid="apps.main.metrics.published_at")
def _stamp_published_at(headers: dict | None = None, **_: Any) -> None:
    # Messages carry no enqueue time of their own; this one lets the exporter age the queue head.
    if headers is not None:
        headers.setdefault(PUBLISHED_AT_HEADER, time.time())


@signals.after_task_publish.connect(dispatch_uid="apps.main.metrics.sent")
def _count_sent(sender: str | None = None, headers: dict | None = None, routing_key: str | None = None,
                **_: Any) -> None:
    name = (headers or {}).get("task") or sender
    TASK_SENT.labels(labels.task_label(name), labels.queue_label(routing_key), labels.hostname()).inc()


# --- the worker's main process -------------------------------------------------------------------------


@signals.task_received.connect(dispatch_uid="apps.main.metrics.received")
def _count_received(request: Any = None, **_: Any) -> None:
    _series_of(TASK_RECEIVED, getattr(request, "name", None), request).inc()


@signals.task_rejected.connect(dispatch_uid="apps.main.metrics.rejected")
def _count_rejected(message: Any = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    TASK_REJECTED.labels(
        labels.task_label(headers.get("task")), labels.queue_label(delivery.get("routing_key")), labels.hostname()
    ).inc()


@signals.task_unknown.connect(dispatch_uid="apps.main.metrics.unknown")
def _count_unknown(message: Any = None, **kwargs: Any) -> None:
    _count_rejected(message=message, **kwargs)


@signals.task_revoked.connect(dispatch_uid="apps.main.metrics.revoked")
def _count_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    TASK_REVOKED.labels(**_task_labels(getattr(sender, "name", None), request)).inc()


# --- pool children ------------------------------------------------------------------------------------


@signals.task_prerun.connect(dispatch_uid="apps.main.metrics.prerun")
def _count_started(task: Any = None, **_: Any) -> None:
    _series_of(TASK_STARTED, getattr(task, "name", None), getattr(task, "request", None)).inc()


@receiver(task_timed, dispatch_uid="apps.main.metrics.runtime")
def _observe_runtime(task: Any = None, seconds: float = 0.0, **_: Any) -> None:
    _series_of(TASK_RUNTIME, getattr(task, "name", None), getattr(task, "request", None)).observe(seconds)


@signals.task_success.connect(dispatch_uid="apps.main.metrics.success")
def _count_succeeded(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    _series_of(TASK_SUCCEEDED, getattr(sender, "name", None), request).inc()
    periodic = getattr(request, "periodic_task_name", None) if request is not None else None
    if periodic:
        PERIODIC_LAST_SUCCESS.labels(str(periodic)).set(time.time())


@signals.task_failure.connect(dispatch_uid="apps.main.metrics.failure")
def _count_failed(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                  **_: Any) -> None:
    request = getattr(sender, "request", None)
    # After a hard time limit this runs in the main process, where ``request`` is not this task's.
    if request is not None and getattr(request, "id", None) != task_id:
        request = None
    TASK_FAILED.labels(**_task_labels(getattr(sender, "name", None), request),
                       exception=labels.exception_label(exception)).inc()


@signals.task_retry.connect(dispatch_uid="apps.main.metrics.retry")
def _count_retried(sender: Any = None, request: Any = None, **_: Any) -> None:
    TASK_RETRIED.labels(**_task_labels(getattr(sender, "name", None), request)).inc()


def _count_dead_letter(letter: Any = None, **_: Any) -> None:
    TASK_DEAD_LETTERED.labels(
        labels.task_label(getattr(letter, "task_name", None)),
        labels.queue_label(getattr(letter, "queue", None)),
        labels.hostname(),
    ).inc()


def connect_dead_letters() -> None:
    """Count ``apps.main.deadletter.dead_lettered``; needs the app registry (the store imports models)."""
    from apps.main.deadletter import dead_lettered

    dead_lettered.connect(_count_dead_letter, dispatch_uid="apps.main.metrics.dead_lettered")


# --- worker lifecycle ---------------------------------------------------------------------------------


class WorkerStateCollector(Collector):
    """Gauges the main process knows first-hand: it is up, and how many tasks its pool runs now."""

    def collect(self):  # type: ignore[override]
        from celery.worker import state

        host = labels.hostname()
        up = GaugeMetricFamily("celery_worker_up", "1 while the worker's main process serves metrics.",
                               labels=["hostname"])
        up.add_metric([host], 1.0)
        active = GaugeMetricFamily("celery_worker_tasks_active", "Tasks the worker's pool is executing now.",
                                   labels=["hostname"])
        active.add_metric([host], float(len(state.active_requests)))
        yield up
        yield active


_server: Any = None


@signals.worker_init.connect(dispatch_uid="apps.main.metrics.worker_init")
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # Main process, before the pool forks: no child has written a sample yet.
    nodename = getattr(sender, "hostname", None)
    if nodename:
        labels.set_hostname(str(nodename))
    directory = mp.multiprocess_dir()
    if directory is not None:
        mp.wipe(directory)
    elif getattr(sender, "pool_cls", None) is not None and "prefork" in str(sender.pool_cls).lower():
        logger.warning("%s is unset: the metrics port will not see what pool children count",
                       env.PROMETHEUS_MULTIPROC_DIR)
    connect_dead_letters()


@signals.worker_process_init.connect(dispatch_uid="apps.main.metrics.process_init")
def _on_child_init(**_: Any) -> None:
    connect_dead_letters()


@signals.worker_process_shutdown.connect(dispatch_uid="apps.main.metrics.process_shutdown")
def _on_child_shutdown(pid: int | None = None, **_: Any) -> None:
    directory = mp.multiprocess_dir()
    if directory is not None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid or os.getpid(), str(directory))


@signals.worker_ready.connect(dispatch_uid="apps.main.metrics.worker_ready")
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    _preinitialise(sender)
    start_metrics_server()
    _set_clean_stop(getattr(sender, "hostname", None), stopped=False)  # this name may have stopped cleanly before


# --- clean stops: the exporter reports a lost worker as down unless it said it was stopping --------------------

#: Life of the clean-stop marker: far longer than the exporter remembers a lost worker (--worker-down-retention).
CLEAN_STOP_TTL_SECONDS = 24 * 3600
#: The marker is written from a signal handler, before the shutdown proper: never wait long for Redis.
CLEAN_STOP_REDIS_TIMEOUT = 1.0


@signals.worker_shutting_down.connect(dispatch_uid="apps.main.metrics.clean_stop")
def _on_worker_shutting_down(sender: Any = None, **_: Any) -> None:
    # Celery's handler of SIGTERM/SIGINT/SIGQUIT in the main process (a scale-down, a rollout: not a crash) sends
    # it as the shutdown begins, before the worker stops answering the exporter's census. SIGKILL sends nothing.
    _set_clean_stop(sender, stopped=True)


def _set_clean_stop(nodename: Any, *, stopped: bool) -> None:
    import redis

    from apps.main import redis_connection
    from apps.main.redis_keys import WORKER_STOPPED_KEY

    url = redis_connection.app_redis_url()
    if not nodename or url is None:
        return
    key = WORKER_STOPPED_KEY.format(node=nodename)
    try:
        client = redis_connection.client(url, socket_timeout=CLEAN_STOP_REDIS_TIMEOUT,
                                         socket_connect_timeout=CLEAN_STOP_REDIS_TIMEOUT)
        try:
            if stopped:
                client.set(key, f"{time.time():.3f}", ex=CLEAN_STOP_TTL_SECONDS)
            else:
                client.delete(key)
        finally:
            client.close()
    except redis.RedisError as exc:  # the worker stops (or starts) all the same; at worst it is reported down
        logger.warning("could not %s the clean-stop marker of %s: %s", "set" if stopped else "clear", nodename, exc)


def _preinitialise(consumer: Any) -> None:
    """Create every (task, consumed queue) series at 0, so the first failure is an increase, not a new series."""
    app = getattr(consumer, "app", None)
    if app is None:
        return
    queues = list(getattr(app.amqp.queues, "consume_from", None) or {})
    host = labels.hostname()
    consumed = {labels.queue_label(q) for q in queues}
    for name in app.tasks:
        if name.startswith("celery."):
            continue
        for queue in consumed:
            for counter in (TASK_RECEIVED, TASK_STARTED, TASK_SUCCEEDED, TASK_RETRIED, TASK_REJECTED, TASK_REVOKED,
                            TASK_DEAD_LETTERED):
                counter.labels(name, queue, host)
    for queue in consumed:  # poison messages: rejected and dead-lettered under one bounded name
        TASK_REJECTED.labels(labels.UNREGISTERED, queue, host)
        TASK_DEAD_LETTERED.labels(labels.UNREGISTERED, queue, host)


def metrics_port() -> int:
    return env.get_int(env.METRICS_PORT, WORKER_METRICS_PORT)


def start_metrics_server() -> None:
    """Serve merged metrics from the main process; a port clash is logged, never kills the worker."""
    global _server
    if _server is not None:
        return
    from prometheus_client import start_http_server

    port = metrics_port()
    try:
        _server, _thread = start_http_server(port, registry=mp.serving_registry(WorkerStateCollector()))
    except OSError as exc:
        logger.error("worker metrics server cannot listen on port %d: %s", port, exc)
        return
    logger.info("worker metrics on :%d/metrics", port)


@signals.worker_shutdown.connect(dispatch_uid="apps.main.metrics.worker_shutdown")
def _on_worker_shutdown(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
